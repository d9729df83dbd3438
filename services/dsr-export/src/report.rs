//! The package's documents: the Art. 15 access document (JSON, schema
//! `dsr.export.access/1`) and its HTML rendering in Swedish or English, and
//! the Art. 20 portability archive (JSON and CSV in a zip).

use dsr_domain::category::LegalBasis;
use dsr_domain::text::html_escape as esc;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Category, Disclosure, Language, Record};
use crate::spool::Spooled;

/// The access document's schema id.
pub const ACCESS_SCHEMA: &str = "dsr.export.access/1";
/// The portability document's schema id.
pub const PORTABILITY_SCHEMA: &str = "dsr.export.portability/1";

/// The controller answering.
#[derive(Clone, Debug, Serialize)]
pub struct ControllerOut {
    /// Organisationsnummer.
    pub organisation_number: String,
    /// Name.
    pub name: String,
}

/// The policy in force.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyOut {
    /// Version.
    pub version: String,
    /// Published.
    pub published: NaiveDate,
}

/// Where to complain (Art. 15(1)(f)).
#[derive(Clone, Debug, Serialize)]
pub struct ComplaintOut {
    /// First the DPO.
    pub data_protection_officer: String,
    /// Then the supervisory authority.
    pub supervisory_authority: String,
    /// Its web site.
    pub supervisory_authority_url: String,
}

/// An identity the answer covers.
#[derive(Clone, Debug, Serialize)]
pub struct IdentityOut {
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Value.
    pub value: String,
}

/// One system's records.
#[derive(Clone, Debug, Serialize)]
pub struct SystemOut {
    /// Id.
    pub id: String,
    /// Name.
    pub display_name: String,
    /// "processor" or "controller".
    pub role: String,
    /// The operator in the registry.
    pub operator_recipient_id: String,
    /// Its records, read from the build's spool as they are written.
    pub records: Spooled<Record>,
}

/// One category of the person's data, with its declarations.
#[derive(Clone, Debug, Serialize)]
pub struct CategoryOut {
    /// What the system declared.
    #[serde(flatten)]
    pub category: Category,
    /// The systems holding it.
    pub systems: Vec<String>,
}

/// An automated decision (Art. 15(1)(h)).
#[derive(Clone, Debug, Serialize)]
pub struct AutomatedOut {
    /// The category it produces.
    pub category: String,
    /// Its name.
    pub display_name: String,
    /// The system making it.
    pub system: String,
    /// Logic, significance and consequences.
    pub logic: String,
}

/// One of the person's rights, as the report states it.
#[derive(Clone, Debug, Serialize)]
pub struct RightOut {
    /// Stable id, e.g. "erasure".
    pub right: &'static str,
    /// The article.
    pub article: &'static str,
    /// What it means, in the report's language.
    pub text: &'static str,
}

/// The Art. 15 answer.
#[derive(Clone, Debug, Serialize)]
pub struct AccessDocument {
    /// [`ACCESS_SCHEMA`].
    pub schema: &'static str,
    /// The request.
    pub request_id: String,
    /// When built.
    pub generated_at: String,
    /// "sv" or "en".
    pub language: &'static str,
    /// Who answers.
    pub controller: ControllerOut,
    /// The privacy policy in force.
    pub policy: PolicyOut,
    /// Art. 15(1): whether any personal data is processed.
    pub data_processed: bool,
    /// Records in the answer.
    pub record_count: u64,
    /// The identities searched for.
    pub identities: Vec<IdentityOut>,
    /// Art. 15(3): the copy, per system.
    pub systems: Vec<SystemOut>,
    /// Art. 15(1)(a), (b), (d), (g): per category.
    pub categories: Vec<CategoryOut>,
    /// Art. 15(1)(c) and 15(2): recipients and transfers.
    pub recipients: Vec<Disclosure>,
    /// Art. 15(1)(h).
    pub automated_decisions: Vec<AutomatedOut>,
    /// Art. 15(1)(e).
    pub rights: Vec<RightOut>,
    /// Art. 15(1)(f).
    pub complaint: ComplaintOut,
}

/// The rights the report states (Art. 15(1)(e), plus access and
/// portability themselves), in `lang`.
pub fn rights(lang: Language) -> Vec<RightOut> {
    let t = |sv: &'static str, en: &'static str| match lang {
        Language::Sv => sv,
        Language::En => en,
    };
    vec![
        RightOut {
            right: "rectification",
            article: "16",
            text: t(
                "Du har rätt att få felaktiga uppgifter om dig rättade och ofullständiga uppgifter kompletterade.",
                "You have the right to have inaccurate data about you corrected and incomplete data completed.",
            ),
        },
        RightOut {
            right: "erasure",
            article: "17",
            text: t(
                "Du har rätt att få dina uppgifter raderade, utom när vi måste behålla dem enligt lag (till exempel penningtvättslagen) eller för rättsliga anspråk.",
                "You have the right to have your data erased, except where the law (for example the anti-money-laundering act) or legal claims require us to keep it.",
            ),
        },
        RightOut {
            right: "restriction",
            article: "18",
            text: t(
                "Du har rätt att begära att behandlingen begränsas, till exempel medan riktigheten i uppgifterna kontrolleras.",
                "You have the right to have processing restricted, for example while the accuracy of the data is checked.",
            ),
        },
        RightOut {
            right: "portability",
            article: "20",
            text: t(
                "Du har rätt att få ut de uppgifter du själv lämnat, på avtal eller samtycke, i ett maskinläsbart format.",
                "You have the right to receive the data you provided yourself, on contract or consent, in a machine-readable format.",
            ),
        },
        RightOut {
            right: "objection",
            article: "21",
            text: t(
                "Du har rätt att invända mot behandling som grundas på berättigat intresse. Invänder du mot direktmarknadsföring, inklusive profilering för den, upphör den behandlingen.",
                "You have the right to object to processing based on legitimate interests. If you object to direct marketing, including profiling for it, that processing stops.",
            ),
        },
        RightOut {
            right: "withdraw_consent",
            article: "7(3)",
            text: t(
                "Du kan när som helst återkalla ett samtycke; det påverkar inte behandlingen innan återkallelsen.",
                "You may withdraw consent at any time; this does not affect processing before the withdrawal.",
            ),
        },
        RightOut {
            right: "automated_decisions",
            article: "22",
            text: t(
                "Du har rätt att inte bli föremål för ett beslut som enbart grundas på automatiserad behandling om det har rättsliga följder eller på liknande sätt i betydande grad påverkar dig.",
                "You have the right not to be subject to a decision based solely on automated processing that produces legal or similarly significant effects on you.",
            ),
        },
    ]
}

/// RFC 3339, seconds, UTC.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

struct Labels {
    title: &'static str,
    intro: &'static str,
    controller: &'static str,
    policy: &'static str,
    none_found: &'static str,
    identities: &'static str,
    categories: &'static str,
    category: &'static str,
    purposes: &'static str,
    basis: &'static str,
    retention: &'static str,
    source: &'static str,
    from_you: &'static str,
    systems: &'static str,
    recipients: &'static str,
    no_recipients: &'static str,
    recipient: &'static str,
    country: &'static str,
    transfer: &'static str,
    within_eea: &'static str,
    automated: &'static str,
    no_automated: &'static str,
    rights: &'static str,
    complaint: &'static str,
    complaint_text: &'static str,
    data: &'static str,
    field: &'static str,
    value: &'static str,
    restricted: &'static str,
    attested: &'static str,
    objected: &'static str,
    request: &'static str,
    dpo: &'static str,
    record: &'static str,
    direct_marketing: &'static str,
}

const SV: Labels = Labels {
    title: "Registerutdrag",
    intro: "Det här är vårt svar på din begäran om tillgång enligt artikel 15 i dataskyddsförordningen (GDPR).",
    controller: "Personuppgiftsansvarig",
    policy: "Integritetspolicy i kraft",
    none_found: "Vi behandlar inga personuppgifter om dig i de system som söktes.",
    identities: "Uppgifter vi har sökt på",
    categories: "Kategorier av personuppgifter, ändamål, rättslig grund och lagringstid (art. 15.1 a, b, d, g)",
    category: "Kategori",
    purposes: "Ändamål",
    basis: "Rättslig grund",
    retention: "Lagringstid",
    source: "Källa",
    from_you: "Från dig",
    systems: "System",
    recipients: "Mottagare och överföringar till tredjeland (art. 15.1 c, 15.2)",
    no_recipients: "Inga mottagare har fått dessa uppgifter.",
    recipient: "Mottagare",
    country: "Land",
    transfer: "Skyddsåtgärd vid överföring",
    within_eea: "Inom EES",
    automated: "Automatiserat beslutsfattande och profilering (art. 15.1 h)",
    no_automated: "Inga automatiserade beslut fattas om dig.",
    rights: "Dina rättigheter (art. 15.1 e)",
    complaint: "Klagomål (art. 15.1 f)",
    complaint_text: "Kontakta först vårt dataskyddsombud. Du har också rätt att klaga hos tillsynsmyndigheten:",
    data: "Dina uppgifter (art. 15.3)",
    field: "Fält",
    value: "Värde",
    restricted: "begränsad (art. 18)",
    attested: "uppgiven för hand och intygad av",
    objected: "invändning mot",
    request: "Ärende",
    dpo: "Dataskyddsombud:",
    record: "Post",
    direct_marketing: "direktmarknadsföring",
};

const EN: Labels = Labels {
    title: "Access report",
    intro: "This is our answer to your request for access under Article 15 of the General Data Protection Regulation (GDPR).",
    controller: "Controller",
    policy: "Privacy policy in force",
    none_found: "We process no personal data about you in the systems searched.",
    identities: "What we searched for",
    categories: "Categories of personal data, purposes, legal basis and retention (Art. 15(1)(a), (b), (d), (g))",
    category: "Category",
    purposes: "Purposes",
    basis: "Legal basis",
    retention: "Retention",
    source: "Source",
    from_you: "From you",
    systems: "Systems",
    recipients: "Recipients and transfers outside the EEA (Art. 15(1)(c), 15(2))",
    no_recipients: "No recipient has received this data.",
    recipient: "Recipient",
    country: "Country",
    transfer: "Transfer safeguard",
    within_eea: "Within the EEA",
    automated: "Automated decision-making and profiling (Art. 15(1)(h))",
    no_automated: "No automated decisions are made about you.",
    rights: "Your rights (Art. 15(1)(e))",
    complaint: "Complaints (Art. 15(1)(f))",
    complaint_text: "Contact our data protection officer first. You also have the right to lodge a complaint with the supervisory authority:",
    data: "Your data (Art. 15(3))",
    field: "Field",
    value: "Value",
    restricted: "restricted (Art. 18)",
    attested: "reported by hand and attested by",
    objected: "objected to",
    request: "Request",
    dpo: "Data protection officer:",
    record: "Record",
    direct_marketing: "direct marketing",
};

/// The legal basis in words, with its article.
pub fn basis_text(basis: Option<LegalBasis>, lang: Language) -> String {
    let Some(basis) = basis else {
        return String::new();
    };
    let (sv, en) = match basis {
        LegalBasis::Consent => ("Samtycke", "Consent"),
        LegalBasis::Contract => ("Avtal", "Contract"),
        LegalBasis::LegalObligation => ("Rättslig förpliktelse", "Legal obligation"),
        LegalBasis::VitalInterests => ("Grundläggande intressen", "Vital interests"),
        LegalBasis::PublicTask => ("Allmänt intresse", "Public task"),
        LegalBasis::LegitimateInterests => ("Berättigat intresse", "Legitimate interests"),
    };
    let point = basis.point();
    match lang {
        Language::Sv => format!("{sv} (art. 6.1 {point})"),
        Language::En => format!("{en} (Art. 6(1)({point}))"),
    }
}

/// An identity type in words.
fn identity_kind(kind: &str, lang: Language) -> &str {
    let (sv, en) = match kind {
        "email" => ("E-postadress", "Email address"),
        "phone" => ("Telefonnummer", "Telephone number"),
        "personnummer" => ("Personnummer", "Personal identity number"),
        "customer_id" => ("Kundnummer", "Customer number"),
        "organisationsnummer" => ("Organisationsnummer", "Company registration number"),
        other => (other, other),
    };
    match lang {
        Language::Sv => sv,
        Language::En => en,
    }
}

/// A value that reads the same in every language (a name, a number, a
/// date, the person's own data): marked `translate="no"`, as HTML defines
/// it, so translation tools and the report's language check leave it.
fn same(s: &str) -> String {
    format!("<span translate=\"no\">{}</span>", esc(s))
}

/// The report as a self-contained HTML page, every sentence in `lang`: the
/// labels here, the texts the systems and the registry give in that
/// language; names, numbers, dates and the person's own data are marked
/// `translate="no"`. Written to `out` as it is rendered, record by record.
pub fn render_html(
    doc: &AccessDocument,
    lang: Language,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let l = match lang {
        Language::Sv => &SV,
        Language::En => &EN,
    };
    let system_name = |id: &str| -> String {
        doc.systems
            .iter()
            .find(|s| s.id == id)
            .map_or_else(|| id.to_owned(), |s| s.display_name.clone())
    };
    let category_name = |id: &str| -> String {
        doc.categories
            .iter()
            .find(|c| c.category.id == id)
            .map_or_else(|| id.to_owned(), |c| c.category.display_name.clone())
    };
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title>\
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}}\
table{{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:.3em;text-align:left;vertical-align:top}}\
th{{background:#f3f3f3}}</style></head><body>\n<h1>{}</h1>\n<p>{}</p>\n",
        lang.code(),
        l.title,
        l.title,
        l.intro
    );
    let _ = writeln!(
        h,
        "<p><strong>{}:</strong> {} ({})<br><strong>{}:</strong> {} ({})<br>{}: {}</p>",
        l.controller,
        same(&doc.controller.name),
        same(&doc.controller.organisation_number),
        l.policy,
        same(&doc.policy.version),
        same(&doc.policy.published.to_string()),
        l.request,
        same(&doc.request_id)
    );
    let _ = write!(h, "<h2>{}</h2>\n<ul>", l.identities);
    for i in &doc.identities {
        let _ = write!(
            h,
            "<li>{}: {}</li>",
            esc(identity_kind(&i.kind, lang)),
            same(&i.value)
        );
    }
    h.push_str("</ul>\n");
    if !doc.data_processed {
        let _ = writeln!(h, "<p><strong>{}</strong></p>", l.none_found);
    }
    let _ = write!(
        h,
        "<h2>{}</h2>\n<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>\n",
        l.categories, l.category, l.purposes, l.basis, l.retention, l.source, l.systems
    );
    for c in &doc.categories {
        let cat = &c.category;
        let source = if cat.source.is_empty() && cat.provided_by_subject {
            l.from_you.to_owned()
        } else {
            cat.source.clone()
        };
        let retention = if cat.retention_legal_ground.is_empty() {
            cat.retention.clone()
        } else {
            format!("{} ({})", cat.retention, cat.retention_legal_ground)
        };
        let purposes: String = cat
            .purposes
            .iter()
            .map(|p| format!("<li>{}</li>", esc(p)))
            .collect();
        let systems: Vec<String> = c.systems.iter().map(|s| system_name(s)).collect();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td><ul>{}</ul></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&cat.display_name),
            purposes,
            esc(&basis_text(cat.legal_basis, lang)),
            esc(&retention),
            esc(&source),
            esc(&systems.join(", "))
        );
    }
    h.push_str("</table>\n");
    let _ = writeln!(h, "<h2>{}</h2>", l.recipients);
    if doc.recipients.is_empty() {
        let _ = writeln!(h, "<p>{}</p>", l.no_recipients);
    } else {
        let _ = writeln!(
            h,
            "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            l.recipient, l.category, l.country, l.transfer
        );
        for r in &doc.recipients {
            let transfer = if r.outside_eea {
                r.safeguard.clone()
            } else {
                l.within_eea.to_owned()
            };
            let categories: Vec<String> = r.categories.iter().map(|c| category_name(c)).collect();
            let _ = writeln!(
                h,
                "<tr><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.name),
                esc(&r.purpose),
                esc(&categories.join(", ")),
                same(&r.country),
                esc(&transfer)
            );
        }
        h.push_str("</table>\n");
    }
    let _ = writeln!(h, "<h2>{}</h2>", l.automated);
    if doc.automated_decisions.is_empty() {
        let _ = writeln!(h, "<p>{}</p>", l.no_automated);
    }
    for a in &doc.automated_decisions {
        let _ = writeln!(
            h,
            "<p><strong>{}</strong> ({}): {}</p>",
            esc(&a.display_name),
            esc(&system_name(&a.system)),
            esc(&a.logic)
        );
    }
    let _ = write!(h, "<h2>{}</h2>\n<ul>", l.rights);
    for r in &doc.rights {
        let _ = write!(
            h,
            "<li>{} ({} {})</li>",
            esc(r.text),
            match lang {
                Language::Sv => "art.",
                Language::En => "Art.",
            },
            r.article
        );
    }
    h.push_str("</ul>\n");
    let _ = writeln!(
        h,
        "<h2>{}</h2>\n<p>{} <a href=\"mailto:{dpo}\" translate=\"no\">{dpo}</a>. {} {} (<a href=\"{url}\" translate=\"no\">{url}</a>).</p>",
        l.complaint,
        l.dpo,
        l.complaint_text,
        esc(&doc.complaint.supervisory_authority),
        dpo = esc(&doc.complaint.data_protection_officer),
        url = esc(&doc.complaint.supervisory_authority_url),
    );
    let _ = writeln!(h, "<h2>{}</h2>", l.data);
    for s in &doc.systems {
        let _ = writeln!(h, "<h3>{}</h3>", esc(&s.display_name));
        for r in s.records.iter()? {
            let r = r?;
            if h.len() >= 32 * 1024 {
                out.write_all(h.as_bytes())?;
                h.clear();
            }
            let mut flags = Vec::new();
            if r.restricted {
                flags.push(l.restricted.to_owned());
            }
            if let Some(a) = &r.attested_by {
                flags.push(format!("{} {}, {}", l.attested, a.name, a.on));
            }
            if !r.objected_purposes.is_empty() {
                let purposes: Vec<&str> = r
                    .objected_purposes
                    .iter()
                    .map(|p| {
                        if p == "direct_marketing" {
                            l.direct_marketing
                        } else {
                            p.as_str()
                        }
                    })
                    .collect();
                flags.push(format!("{} {}", l.objected, purposes.join(", ")));
            }
            let _ = writeln!(
                h,
                "<table><tr><th colspan=\"2\">{} {}{}</th></tr><tr><th>{}</th><th>{}</th></tr>",
                l.record,
                same(&format!("{}/{}", r.store, r.key)),
                if flags.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", esc(&flags.join("; ")))
                },
                l.field,
                l.value
            );
            for f in &r.fields {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    esc(&category_name(&f.category)),
                    same(f.value.as_deref().unwrap_or("–"))
                );
            }
            h.push_str("</table>\n");
        }
    }
    h.push_str("</body></html>\n");
    out.write_all(h.as_bytes())
}

/// The portability document.
#[derive(Clone, Debug, Serialize)]
pub struct PortabilityDocument {
    /// [`PORTABILITY_SCHEMA`].
    pub schema: &'static str,
    /// The request.
    pub request_id: String,
    /// When built.
    pub generated_at: String,
    /// Who answers.
    pub controller: ControllerOut,
    /// Per system, the records with only their portable fields.
    pub systems: Vec<PortableSystem>,
}

/// One system's portable records.
#[derive(Clone, Debug, Serialize)]
pub struct PortableSystem {
    /// Id.
    pub id: String,
    /// Records, read from the build's spool as they are written.
    pub records: Spooled<PortableRecord>,
    /// Per store, the field names its records hold, in the order first
    /// seen: the columns of the store's CSV.
    #[serde(skip)]
    pub columns: BTreeMap<String, Vec<String>>,
}

/// One record: field name → value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortableRecord {
    /// The store.
    pub store: String,
    /// The key.
    pub key: String,
    /// The fields.
    pub fields: BTreeMap<String, Option<String>>,
}

fn csv_cell(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

/// The CSV of one store: a header of field names, a row per record.
fn write_csv(
    out: &mut dyn std::io::Write,
    system: &PortableSystem,
    store: &str,
    columns: &[String],
) -> std::io::Result<()> {
    let mut line = String::from("record_key");
    for c in columns {
        line.push(',');
        line.push_str(&csv_cell(c));
    }
    line.push_str("\r\n");
    out.write_all(line.as_bytes())?;
    for r in system.records.iter()? {
        let r = r?;
        if r.store != store {
            continue;
        }
        line.clear();
        line.push_str(&csv_cell(&r.key));
        for c in columns {
            line.push(',');
            if let Some(Some(v)) = r.fields.get(c) {
                line.push_str(&csv_cell(v));
            }
        }
        line.push_str("\r\n");
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// The zip of `data.json` and one CSV per store of each system, written
/// to `out` as it is made.
pub fn portability_zip(
    doc: &PortabilityDocument,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut zip = zip::ZipWriter::new_stream(out);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("data.json", opts)?;
    serde_json::to_writer_pretty(&mut zip, doc).map_err(std::io::Error::other)?;
    for s in &doc.systems {
        for (store, columns) in &s.columns {
            zip.start_file(format!("{}/{store}.csv", s.id), opts)?;
            write_csv(&mut zip, s, store, columns)?;
        }
    }
    zip.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_values() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn legal_bases_name_their_article_in_both_languages() {
        assert_eq!(
            basis_text(Some(LegalBasis::Contract), Language::En),
            "Contract (Art. 6(1)(b))"
        );
        assert_eq!(
            basis_text(Some(LegalBasis::Consent), Language::Sv),
            "Samtycke (art. 6.1 a)"
        );
    }
}
