//! Delivering one-time codes: SMTP through a relay in production, an outbox
//! directory (one file per message) in the embedded default.

use std::path::PathBuf;

use dsr_domain::identity::{Identity, IdentityType};

/// A message to one person.
#[derive(Clone)]
pub struct Message {
    /// Where: an email address or a phone number (personal data).
    pub to: Identity,
    /// Subject line.
    pub subject: String,
    /// Text.
    pub body: String,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("to", &self.to.kind())
            .finish_non_exhaustive()
    }
}

/// Why a message could not be sent. Never carries the address or the text.
#[derive(Debug, thiserror::Error)]
#[error("message not delivered: {0}")]
pub struct DeliveryError(pub String);

/// Sends messages.
#[tonic::async_trait]
pub trait Notifier: Send + Sync {
    /// Sends `m`.
    async fn send(&self, m: &Message) -> Result<(), DeliveryError>;
}

/// Writes each message to a file in a directory (development).
#[derive(Clone, Debug)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// An outbox in `dir` (created when missing).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

#[tonic::async_trait]
impl Notifier for Outbox {
    async fn send(&self, m: &Message) -> Result<(), DeliveryError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| DeliveryError(e.kind().to_string()))?;
        let name = format!(
            "{}-{}-{}.txt",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
            m.to.kind(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let text = format!(
            "To: {}\nSubject: {}\n\n{}\n",
            m.to.value(),
            m.subject,
            m.body
        );
        tokio::fs::write(self.dir.join(name), text)
            .await
            .map_err(|e| DeliveryError(e.kind().to_string()))
    }
}

/// Sends email through an SMTP relay; SMS through the relay's email-to-SMS
/// gateway (`<E.164 number without +>@<gateway domain>`) when one is set.
#[derive(Clone)]
pub struct Smtp {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
    sms_gateway_domain: Option<String>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp").finish_non_exhaustive()
    }
}

impl Smtp {
    /// A relay at `url` (`smtp://host:587?tls=required` with STARTTLS,
    /// `smtps://host:465` with TLS, plain `smtp://host:25` inside a cluster;
    /// credentials in the URL), sending as `from`.
    pub fn new(
        url: &str,
        from: &str,
        sms_gateway_domain: Option<String>,
    ) -> Result<Self, DeliveryError> {
        let transport = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
            .map_err(|_| DeliveryError("invalid SMTP URL".into()))?
            .build();
        let from = from
            .parse()
            .map_err(|_| DeliveryError("invalid sender address".into()))?;
        Ok(Self {
            transport,
            from,
            sms_gateway_domain,
        })
    }
}

#[tonic::async_trait]
impl Notifier for Smtp {
    async fn send(&self, m: &Message) -> Result<(), DeliveryError> {
        use lettre::AsyncTransport as _;
        let to = match m.to.kind() {
            IdentityType::Email => m.to.value().to_owned(),
            IdentityType::Phone => match &self.sms_gateway_domain {
                Some(domain) => format!("{}@{domain}", m.to.value().trim_start_matches('+')),
                None => return Err(DeliveryError("no SMS gateway configured".into())),
            },
            IdentityType::Personnummer
            | IdentityType::Organisationsnummer
            | IdentityType::CustomerId => {
                return Err(DeliveryError("not a reachable identity".into()));
            }
        };
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to
                .parse()
                .map_err(|_| DeliveryError("invalid recipient".into()))?)
            .subject(m.subject.clone())
            .body(m.body.clone())
            .map_err(|_| DeliveryError("cannot build the message".into()))?;
        self.transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(|_| DeliveryError("the relay refused the message".into()))
    }
}
