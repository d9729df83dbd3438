//! The fan-out and the identity expansion, against test doubles of data
//! systems (no sockets): what is found, what is asked of whom, and what a
//! failure or a timeout does to the map.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use dsr_discovery::locator::{
    AffectedPerson, Breach, Capabilities, DataSystems, Found, FoundStore, Header, Locator, Outcome,
    SubjectMap, SystemError,
};
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};

fn id(t: IdentityType, v: &str) -> Identity {
    Identity::parse(t, v).unwrap()
}

fn org(s: &str) -> Organisationsnummer {
    Organisationsnummer::parse(s).unwrap()
}

/// A test double: each system accepts some identity types, knows the person
/// by some identities, links others, and may fail or hang.
#[derive(Default)]
struct Fake {
    systems: BTreeMap<String, FakeSystem>,
    calls: Mutex<Vec<(String, Vec<IdentityType>)>>,
}

#[derive(Clone)]
struct FakeSystem {
    accepted: BTreeSet<IdentityType>,
    controllers: BTreeSet<Organisationsnummer>,
    knows: BTreeSet<Identity>,
    links: Vec<Identity>,
    /// Says it searched with its links itself (LocateResponse's
    /// `linked_identities_searched`).
    searched: bool,
    behaviour: Behaviour,
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Answers,
    Fails,
    Hangs,
}

#[tonic::async_trait]
impl DataSystems for Fake {
    fn ids(&self) -> Vec<String> {
        self.systems.keys().cloned().collect()
    }
    async fn describe(&self, system: &str) -> Result<Capabilities, SystemError> {
        let s = &self.systems[system];
        Ok(Capabilities {
            accepted: s.accepted.clone(),
            controllers: s.controllers.clone(),
        })
    }
    async fn locate(
        &self,
        system: &str,
        _h: &Header,
        ids: &[Identity],
    ) -> Result<Found, SystemError> {
        let s = self.systems[system].clone();
        self.calls
            .lock()
            .unwrap()
            .push((system.to_owned(), ids.iter().map(Identity::kind).collect()));
        match s.behaviour {
            Behaviour::Fails => return Err(SystemError::Failed("UNAVAILABLE".into())),
            Behaviour::Hangs => {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Behaviour::Answers => {}
        }
        if ids.iter().any(|i| s.knows.contains(i)) {
            let mut stores = BTreeMap::new();
            stores.insert(
                "people".to_owned(),
                FoundStore {
                    keys: ["1".to_owned()].into(),
                    categories: ["contact.name".to_owned()].into(),
                },
            );
            Ok(Found {
                stores,
                linked: s.links.clone(),
                linked_searched: s.searched,
            })
        } else {
            Ok(Found::default())
        }
    }
    async fn find_affected(
        &self,
        system: &str,
        _h: &Header,
        breach: &Breach,
    ) -> Result<Vec<AffectedPerson>, SystemError> {
        let s = self.systems[system].clone();
        self.calls.lock().unwrap().push((system.to_owned(), vec![]));
        match s.behaviour {
            Behaviour::Fails => return Err(SystemError::Failed("UNIMPLEMENTED".into())),
            Behaviour::Hangs => tokio::time::sleep(Duration::from_secs(30)).await,
            Behaviour::Answers => {}
        }
        Ok(s.knows
            .iter()
            .map(|i| AffectedPerson {
                contacts: vec![i.clone()],
                language: "sv".into(),
                categories: breach.categories.clone(),
                records: 2,
                window_applied: false,
            })
            .collect())
    }
}

fn mesh(behaviours: [Behaviour; 3]) -> Arc<Fake> {
    let email = id(IdentityType::Email, "anna@example.se");
    let phone = id(IdentityType::Phone, "+46701234567");
    let cust = id(IdentityType::CustomerId, "C-000001");
    let ctrl: BTreeSet<_> = [org("556134-1248")].into();
    let mut systems = BTreeMap::new();
    // The CRM knows the email and links the phone and the customer number.
    systems.insert(
        "crm".into(),
        FakeSystem {
            accepted: [
                IdentityType::Email,
                IdentityType::Phone,
                IdentityType::CustomerId,
            ]
            .into(),
            controllers: ctrl.clone(),
            knows: [email.clone()].into(),
            links: vec![phone.clone(), cust.clone()],
            searched: false,
            behaviour: behaviours[0],
        },
    );
    // The legal vendor knows only the phone.
    systems.insert(
        "legal".into(),
        FakeSystem {
            accepted: [IdentityType::Phone].into(),
            controllers: ctrl.clone(),
            knows: [phone].into(),
            links: vec![],
            searched: false,
            behaviour: behaviours[1],
        },
    );
    // The print vendor knows only the customer number.
    systems.insert(
        "print".into(),
        FakeSystem {
            accepted: [IdentityType::CustomerId].into(),
            controllers: ctrl,
            knows: [cust].into(),
            links: vec![],
            searched: false,
            behaviour: behaviours[2],
        },
    );
    // A system of another controller is never asked.
    systems.insert(
        "other".into(),
        FakeSystem {
            accepted: [IdentityType::Email].into(),
            controllers: [org("556885-5265")].into(),
            knows: [email].into(),
            links: vec![],
            searched: false,
            behaviour: Behaviour::Answers,
        },
    );
    Arc::new(Fake {
        systems,
        calls: Mutex::new(Vec::new()),
    })
}

fn due() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 23).unwrap()
}

/// Locates, over every system of `fake` (described first), the person of
/// Intrum Sverige AB who gave `email`, in up to three rounds.
async fn locate_by_email(fake: &Arc<Fake>, email: &str) -> SubjectMap {
    let locator = Locator::new(fake.clone(), Duration::from_secs(2));
    locator.refresh().await;
    locator
        .locate(
            "req-1",
            &org("556134-1248"),
            due(),
            vec![id(IdentityType::Email, email)],
            3,
        )
        .await
}

#[tokio::test]
async fn expansion_reaches_systems_that_know_the_person_by_other_identities() {
    let fake = mesh([Behaviour::Answers; 3]);
    let map = locate_by_email(&fake, "Anna@Example.se").await;
    assert!(!map.partial);
    let outcomes: Vec<(&str, Outcome)> = map
        .systems
        .iter()
        .map(|s| (s.system_id.as_str(), s.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("crm", Outcome::Found),
            ("legal", Outcome::Found),
            ("print", Outcome::Found)
        ]
    );
    assert_eq!(map.identities.len(), 3);
    assert_eq!(map.rounds, 2);
    // Minimisation: each system was asked only with the types it accepts, and never twice with one identity.
    let calls = fake.calls.lock().unwrap().clone();
    assert!(
        calls
            .iter()
            .all(|(s, types)| s != "other" && (s != "legal" || types == &[IdentityType::Phone]))
    );
    assert!(
        calls.iter().filter(|(s, _)| s == "crm").count() == 2,
        "{calls:?}"
    );
}

/// A system that followed the person's identities itself (and says so) is
/// not asked again with the identities it linked; the others still are.
#[tokio::test]
async fn a_system_that_searched_with_its_links_is_not_asked_again() {
    let mut fake = Arc::into_inner(mesh([Behaviour::Answers; 3])).unwrap();
    fake.systems.get_mut("crm").unwrap().searched = true;
    let fake = Arc::new(fake);
    let map = locate_by_email(&fake, "anna@example.se").await;
    assert!(!map.partial);
    assert!(
        map.systems.iter().all(|s| s.outcome == Outcome::Found),
        "{:?}",
        map.systems
    );
    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(
        calls.iter().filter(|(s, _)| s == "crm").count(),
        1,
        "{calls:?}"
    );
    let crm = map.systems.iter().find(|s| s.system_id == "crm").unwrap();
    assert_eq!(
        crm.asked_with,
        [
            IdentityType::Email,
            IdentityType::Phone,
            IdentityType::CustomerId
        ]
        .into()
    );
}

#[tokio::test]
async fn a_failing_or_silent_system_makes_the_map_partial() {
    let fake = mesh([Behaviour::Answers, Behaviour::Fails, Behaviour::Hangs]);
    let locator = Locator::new(fake, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let map = locator
        .locate(
            "req-2",
            &org("556134-1248"),
            due(),
            vec![id(IdentityType::Email, "anna@example.se")],
            3,
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(map.partial);
    let by: BTreeMap<&str, (Outcome, Option<String>)> = map
        .systems
        .iter()
        .map(|s| (s.system_id.as_str(), (s.outcome, s.error_reason.clone())))
        .collect();
    assert_eq!(by["crm"].0, Outcome::Found);
    assert_eq!(by["legal"], (Outcome::Failed, Some("UNAVAILABLE".into())));
    assert_eq!(by["print"], (Outcome::TimedOut, Some("TIMED_OUT".into())));
}

#[tokio::test]
async fn nothing_found_is_not_found_and_the_round_limit_holds() {
    let fake = mesh([Behaviour::Answers; 3]);
    let locator = Locator::new(fake.clone(), Duration::from_secs(2));
    let map = locator
        .locate(
            "req-3",
            &org("556134-1248"),
            due(),
            vec![id(IdentityType::Email, "nobody@example.se")],
            3,
        )
        .await;
    assert!(!map.partial);
    let outcomes: Vec<Outcome> = map.systems.iter().map(|s| s.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::NotFound,
            Outcome::NoAcceptedIdentity,
            Outcome::NoAcceptedIdentity
        ]
    );
    // One round only: without expansion the email reaches the CRM alone.
    let map = locator
        .locate(
            "req-4",
            &org("556134-1248"),
            due(),
            vec![id(IdentityType::Email, "anna@example.se")],
            1,
        )
        .await;
    assert_eq!(map.rounds, 1);
    assert_eq!(
        map.systems
            .iter()
            .filter(|s| s.outcome == Outcome::Found)
            .count(),
        1
    );
}

/// A breach: the named systems serving the controller are asked, each
/// answer kept with its system; a failing or silent system is an outcome,
/// and a system of another controller or not named is never asked.
#[tokio::test]
async fn a_breach_asks_the_named_systems_of_the_controller_and_reports_each_outcome() {
    let fake = mesh([Behaviour::Answers, Behaviour::Fails, Behaviour::Hangs]);
    let locator = Locator::new(fake.clone(), Duration::from_millis(50));
    locator.refresh().await;
    let header = Header {
        request_id: "incident-1".into(),
        controller: org("556134-1248"),
        due_date: due(),
        idempotency_key: "incident-1-a".into(),
    };
    let breach = Breach {
        categories: vec!["aml.identity_document".into()],
        from: None,
        to: None,
    };
    let all = locator
        .find_affected(&header, &BTreeSet::new(), &breach)
        .await;
    let by: BTreeMap<&str, (Outcome, usize, Option<String>)> = all
        .iter()
        .map(|s| {
            (
                s.system_id.as_str(),
                (s.outcome, s.people.len(), s.error_reason.clone()),
            )
        })
        .collect();
    assert_eq!(by.len(), 3, "{by:?}");
    assert_eq!(by["crm"], (Outcome::Found, 1, None));
    assert_eq!(
        by["legal"],
        (Outcome::Failed, 0, Some("UNIMPLEMENTED".into()))
    );
    assert_eq!(
        by["print"],
        (Outcome::TimedOut, 0, Some("TIMED_OUT".into()))
    );
    assert_eq!(all[0].people[0].records, 2);
    let only_crm = locator
        .find_affected(&header, &["crm".to_owned()].into(), &breach)
        .await;
    assert_eq!(only_crm.len(), 1);
    assert_eq!(only_crm[0].system_id, "crm");
}
