//! Delivery by SMTP (to a minimal SMTP server on loopback standing in for the
//! relay) and the purge of expired challenges.

use std::sync::{Arc, Mutex};

use dsr_domain::identity::{Identity, IdentityType};
use dsr_identity::migration::Migrator;
use dsr_identity::notifier::{Message, Notifier, Smtp};
use dsr_identity::tokens::TokenIssuer;
use dsr_identity::verifier::{Channel, Settings, Verifier};
use dsr_store::testing::TestDb;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A test double for an SMTP relay: answers the commands a client sends and
/// keeps every message's envelope and data.
async fn smtp_relay() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 relay.test ESMTP\r\n").await.unwrap();
                let mut data = false;
                let mut message = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if data {
                        if line == "." {
                            data = false;
                            store.lock().unwrap().push(std::mem::take(&mut message));
                            w.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            message.push_str(&line);
                            message.push('\n');
                        }
                        continue;
                    }
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 relay.test\r\n",
                        "MAIL" | "RCPT" | "RSET" | "NOOP" => {
                            message.push_str(&line);
                            message.push('\n');
                            b"250 ok\r\n"
                        }
                        "DATA" => {
                            data = true;
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"502 not implemented\r\n",
                    };
                    w.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn codes_go_through_the_smtp_relay() {
    let (port, seen) = smtp_relay().await;
    let smtp = Smtp::new(
        &format!("smtp://127.0.0.1:{port}"),
        "DSR Mesh <noreply@example.se>",
        Some("sms.example.se".into()),
    )
    .unwrap();
    let to = Identity::parse(IdentityType::Email, "Anna@Example.se").unwrap();
    smtp.send(&Message {
        to,
        subject: "Your verification code".into(),
        body: "Your verification code is 123456.".into(),
    })
    .await
    .unwrap();
    let phone = Identity::parse(IdentityType::Phone, "070-123 45 67").unwrap();
    smtp.send(&Message {
        to: phone,
        subject: "Code".into(),
        body: "Your verification code is 654321.".into(),
    })
    .await
    .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[0].contains("RCPT TO:<anna@example.se>") && seen[0].contains("123456"),
        "{}",
        seen[0]
    );
    assert!(
        seen[1].contains("RCPT TO:<46701234567@sms.example.se>"),
        "{}",
        seen[1]
    );
}

#[tokio::test]
async fn expired_challenges_are_purged() {
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let v = Verifier::new(
        db.db.clone(),
        Settings {
            code_ttl: chrono::Duration::seconds(1),
            ..Settings::default()
        },
        Arc::new(dsr_identity::notifier::Outbox::new(
            outbox.path().to_path_buf(),
        )),
        TokenIssuer::generate(chrono::Duration::minutes(5)).unwrap(),
        [1u8; 32],
        None,
    );
    let to = Identity::parse(IdentityType::Email, "a@example.se").unwrap();
    v.start_code(to.clone(), Channel::Email, "sv")
        .await
        .unwrap();
    assert_eq!(
        v.purge(chrono::Duration::zero()).await.unwrap(),
        0,
        "not expired yet"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    v.start_code(to, Channel::Email, "sv").await.unwrap();
    assert_eq!(
        v.purge(chrono::Duration::zero()).await.unwrap(),
        1,
        "only the expired one"
    );
    db.finish().await;
}
