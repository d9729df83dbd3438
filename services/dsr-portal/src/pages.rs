//! The pages, as HTML: forms that work without JavaScript, labelled
//! fields with their help and their error next to them (and a summary
//! linking to each at the top), the page's language declared, a skip link,
//! and a layout that holds from 320 px wide up.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dsr_domain::text::Lang;

use crate::texts::Texts;

pub use dsr_domain::text::html_escape as esc;

const STYLE: &str = "body{font-family:system-ui,sans-serif;line-height:1.5;margin:0;color:#1b1b1b;background:#fff}\
main,header,footer{max-width:40rem;margin:0 auto;padding:1rem}\
header{display:flex;flex-wrap:wrap;justify-content:space-between;gap:.5rem;border-bottom:1px solid #ccc}\
a{color:#0b57a4}a:focus,button:focus,input:focus{outline:3px solid #f5a623;outline-offset:2px}\
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem}\
label,legend{font-weight:600;display:block;margin-top:1rem}\
.help{color:#444;margin:.25rem 0}.error{color:#b00020;font-weight:600;margin:.25rem 0}\
input[type=email],input[type=text],input[type=tel]{width:100%;max-width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem;border:2px solid #555}\
input[aria-invalid=true]{border-color:#b00020}select{max-width:100%;font-size:1rem;padding:.4rem}main{overflow-wrap:break-word}\
fieldset{border:0;padding:0;margin:1rem 0 0}.choice{display:flex;gap:.5rem;align-items:flex-start;margin:.5rem 0}\
button{margin-top:1.5rem;padding:.6rem 1.2rem;font-size:1rem;background:#0b57a4;color:#fff;border:0;border-radius:4px;cursor:pointer}\
.summary{border:3px solid #b00020;padding:.5rem 1rem}.rights li{margin:1rem 0}\
dl{display:grid;grid-template-columns:minmax(6rem,max-content) 1fr;gap:.25rem 1rem}dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}\
table{display:block;overflow-x:auto;max-width:100%;border-collapse:collapse}th,td{text-align:left;vertical-align:top;padding:.25rem .5rem;border-bottom:1px solid #ddd}\
.nav{display:flex;flex-wrap:wrap;gap:.25rem 1rem;list-style:none;padding:0;margin:0 0 1rem}main:has(table){max-width:72rem}\
@media (max-width:30rem){dl{grid-template-columns:1fr;gap:0}dd{margin-bottom:.5rem}}";

/// A whole page: `title`, the body, and the same page in the other language
/// at `other`.
pub fn layout(
    t: &Texts,
    lang: Lang,
    title: &str,
    other: &str,
    body: &str,
    refresh: bool,
) -> String {
    let other_lang = match lang {
        Lang::Sv => Lang::En,
        Lang::En => Lang::Sv,
    };
    format!(
        "<!doctype html>\n<html lang=\"{code}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"referrer\" content=\"no-referrer\">{refresh}\
<title>{full_title}</title><style>{STYLE}</style></head><body>\
<a class=\"skip\" href=\"#main\">{skip}</a>\
<header><a href=\"/{code}/\">{site}</a><a href=\"{other}\" lang=\"{olang}\" hreflang=\"{olang}\">{switch}</a></header>\
<main id=\"main\"><h1>{title}</h1>{body}</main></body></html>\n",
        code = lang.code(),
        refresh = if refresh {
            "<meta http-equiv=\"refresh\" content=\"5\">"
        } else {
            ""
        },
        full_title = if title == t.get("site_title", lang) {
            esc(title)
        } else {
            format!("{} – {}", esc(title), esc(t.get("site_title", lang)))
        },
        title = esc(title),
        site = esc(t.get("site_title", lang)),
        skip = esc(t.get("skip_to_content", lang)),
        other = esc(other),
        olang = other_lang.code(),
        switch = esc(t.get("other_lang_link", lang)),
    )
}

/// A right as the pages offer it: its key and the texts' keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Right {
    /// In forms and sessions.
    pub key: &'static str,
}

/// The rights the privacy centre offers, in order.
pub const RIGHTS: [Right; 6] = [
    Right { key: "access" },
    Right { key: "portability" },
    Right {
        key: "rectification",
    },
    Right { key: "erasure" },
    Right { key: "restriction" },
    Right { key: "objection" },
];

/// The restriction grounds (Art. 18(1)(a)-(d)) as offered.
pub const GROUNDS: [(&str, &str); 4] = [
    ("accuracy", "ground_accuracy"),
    ("unlawful", "ground_unlawful"),
    ("legal_claims", "ground_legal_claims"),
    ("objection", "ground_objection"),
];

/// What a person may have corrected in the privacy centre (Art. 16): the
/// form's field, the category the systems declare, and the label's text.
/// A system corrects every field of the category in the person's records.
pub const CORRECTABLE: [(&str, &str, &str); 5] = [
    ("fix_name", "contact.name", "field_fix_name"),
    ("fix_address", "contact.address", "field_fix_address"),
    ("fix_phone", "contact.phone", "field_fix_phone"),
    ("fix_email", "contact.email", "field_fix_email"),
    ("fix_job_title", "contact.job_title", "field_fix_job_title"),
];

/// What a person may object to in the privacy centre (Art. 21): the
/// purpose as the systems record it, and the label's text. Direct marketing
/// (profiling for it included) is absolute, Art. 21(2)-(3); the others rest
/// on the group's legitimate interests (seed policy: customer surveys), so
/// the objection is weighed, Art. 21(1).
pub const OBJECTABLE: [(&str, &str); 2] = [
    ("direct_marketing", "objection_direct_marketing"),
    ("customer_surveys", "objection_customer_surveys"),
];

/// The longest correct value a person may give (the API's limit).
pub const MAX_CORRECTION: usize = 500;

/// The start page: every right with what it does.
pub fn home(t: &Texts, lang: Lang, dpo_email: &str) -> String {
    let l = lang.code();
    let mut b = format!(
        "<p>{}</p><h2>{}</h2><ul class=\"rights\">",
        esc(t.get("home_intro", lang)),
        esc(t.get("home_choose", lang))
    );
    for r in RIGHTS {
        let name = format!("right_{}", r.key);
        let help = format!("right_{}_help", r.key);
        let _ = write!(
            b,
            "<li><a href=\"/{l}/begin/{k}\">{name}</a><p class=\"help\">{help}</p></li>",
            k = r.key,
            name = esc(t.get(&name, lang)),
            help = esc(t.get(&help, lang)),
        );
    }
    let _ = write!(
        b,
        "</ul><h2>{}</h2><ul class=\"rights\"><li><a href=\"/{l}/fetch\">{}</a><p class=\"help\">{}</p></li>\
<li><a href=\"/{l}/complaint\">{}</a><p class=\"help\">{}</p></li>\
<li><a href=\"/{l}/incident\">{}</a><p class=\"help\">{}</p></li>",
        esc(t.get("home_other", lang)),
        esc(t.get("fetch_title", lang)),
        esc(t.get("fetch_help", lang)),
        esc(t.get("complaint_title", lang)),
        esc(t.get("complaint_help", lang)),
        esc(t.get("incident_title", lang)),
        esc(t.get("incident_help", lang)),
    );
    let _ = write!(
        b,
        "</ul><p>{dpo} <a href=\"mailto:{mail}\">{mail}</a>. {imy}</p>",
        dpo = esc(t.get("home_dpo", lang)),
        mail = esc(dpo_email),
        imy = esc(t.get("home_imy", lang)),
    );
    layout(
        t,
        lang,
        t.get("site_title", lang),
        &format!("/{}/", other(lang)),
        &b,
        false,
    )
}

fn other(lang: Lang) -> &'static str {
    match lang {
        Lang::Sv => "en",
        Lang::En => "sv",
    }
}

/// What the person typed, to show again with the errors.
#[derive(Clone, Debug, Default)]
pub struct Entered {
    /// The controller chosen.
    pub controller: String,
    /// The email typed.
    pub email: String,
    /// The restriction ground chosen.
    pub ground: String,
    /// For a rectification: the correct values typed, by form field.
    pub corrections: BTreeMap<&'static str, String>,
    /// BankID through the company's identity provider is offered.
    pub bankid_offered: bool,
    /// A code by SMS is offered.
    pub sms_offered: bool,
    /// How the person chose to identify: "email", "sms" or "bankid".
    pub method: String,
    /// The phone number typed.
    pub phone: String,
    /// For an objection: the purposes ticked.
    pub purposes: Vec<String>,
}

fn summary(t: &Texts, lang: Lang, errors: &BTreeMap<&'static str, &'static str>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "<div class=\"summary\" role=\"alert\" tabindex=\"-1\"><h2>{}</h2><ul>",
        esc(t.get("errors_title", lang))
    );
    for (field, key) in errors {
        let _ = write!(
            s,
            "<li><a href=\"#{field}\">{}</a></li>",
            esc(t.get(key, lang))
        );
    }
    s.push_str("</ul></div>");
    s
}

fn error_line(
    t: &Texts,
    lang: Lang,
    errors: &BTreeMap<&'static str, &'static str>,
    field: &str,
) -> String {
    errors.get(field).map_or_else(String::new, |k| {
        format!(
            "<p class=\"error\" id=\"{field}-error\">{}</p>",
            esc(t.get(k, lang))
        )
    })
}

fn described(errors: &BTreeMap<&'static str, &'static str>, field: &str) -> String {
    if errors.contains_key(field) {
        format!("aria-describedby=\"{field}-help {field}-error\" aria-invalid=\"true\"")
    } else {
        format!("aria-describedby=\"{field}-help\"")
    }
}

/// The request form for `right`: the company, the email and, for a
/// restriction, the ground.
pub fn form(
    t: &Texts,
    lang: Lang,
    right: Right,
    controllers: &[(String, String)],
    entered: &Entered,
    errors: &BTreeMap<&'static str, &'static str>,
) -> String {
    let l = lang.code();
    let mut b = summary(t, lang, errors);
    let _ = write!(
        b,
        "<p>{}</p><form method=\"post\" action=\"/{l}/begin/{k}\" novalidate>",
        esc(t.get(&format!("right_{}_help", right.key), lang)),
        k = right.key
    );
    b.push_str(&controller_choice(
        t,
        lang,
        controllers,
        &entered.controller,
        errors,
    ));
    if right.key == "restriction" {
        let _ = write!(
            b,
            "<fieldset id=\"ground\" {d}><legend>{legend}</legend><p class=\"help\" id=\"ground-help\"></p>{err}",
            d = described(errors, "ground"),
            legend = esc(t.get("field_ground", lang)),
            err = error_line(t, lang, errors, "ground"),
        );
        for (key, text) in GROUNDS {
            let _ = write!(
                b,
                "<div class=\"choice\"><input type=\"radio\" name=\"ground\" id=\"ground-{key}\" value=\"{key}\"{checked}>\
<label for=\"ground-{key}\" style=\"margin:0;font-weight:400\">{text}</label></div>",
                checked = if entered.ground == key {
                    " checked"
                } else {
                    ""
                },
                text = esc(t.get(text, lang)),
            );
        }
        b.push_str("</fieldset>");
    }
    if right.key == "objection" {
        let _ = write!(
            b,
            "<fieldset id=\"purposes\" {d}><legend>{legend}</legend><p class=\"help\" id=\"purposes-help\">{help}</p>{err}",
            d = described(errors, "purposes"),
            legend = esc(t.get("field_objection", lang)),
            help = esc(t.get("field_objection_help", lang)),
            err = error_line(t, lang, errors, "purposes"),
        );
        for (purpose, text) in OBJECTABLE {
            let _ = write!(
                b,
                "<div class=\"choice\"><input type=\"checkbox\" name=\"purpose_{purpose}\" id=\"purpose-{purpose}\" value=\"1\"{checked}>\
<label for=\"purpose-{purpose}\" style=\"margin:0;font-weight:400\">{text}</label></div>",
                checked = if entered.purposes.iter().any(|p| p == purpose) {
                    " checked"
                } else {
                    ""
                },
                text = esc(t.get(text, lang)),
            );
        }
        b.push_str("</fieldset>");
    }
    if right.key == "rectification" {
        let _ = write!(
            b,
            "<fieldset id=\"corrections\" {d}><legend>{legend}</legend><p class=\"help\" id=\"corrections-help\">{help}</p>{err}",
            d = described(errors, "corrections"),
            legend = esc(t.get("field_corrections", lang)),
            help = esc(t.get("field_corrections_help", lang)),
            err = error_line(t, lang, errors, "corrections"),
        );
        for (field, _, label) in CORRECTABLE {
            let _ = write!(
                b,
                "<label for=\"{field}\" style=\"font-weight:400\">{label}</label>{err}\
<input type=\"text\" id=\"{field}\" name=\"{field}\" value=\"{value}\" maxlength=\"{MAX_CORRECTION}\" {d}>",
                label = esc(t.get(label, lang)),
                err = error_line(t, lang, errors, field),
                value = esc(entered.corrections.get(field).map_or("", String::as_str)),
                d = if errors.contains_key(field) {
                    format!("aria-describedby=\"{field}-error\" aria-invalid=\"true\"")
                } else {
                    String::new()
                },
            );
        }
        b.push_str("</fieldset>");
    }
    if entered.bankid_offered || entered.sms_offered {
        let _ = write!(
            b,
            "<fieldset id=\"method\"><legend>{}</legend>",
            esc(t.get("field_method", lang))
        );
        let chosen = match entered.method.as_str() {
            "sms" if entered.sms_offered => "sms",
            "bankid" if entered.bankid_offered => "bankid",
            _ => "email",
        };
        for (value, key, offered) in [
            ("email", "method_email", true),
            ("sms", "method_sms", entered.sms_offered),
            ("bankid", "method_bankid", entered.bankid_offered),
        ] {
            if !offered {
                continue;
            }
            let _ = write!(
                b,
                "<div class=\"choice\"><input type=\"radio\" name=\"method\" id=\"method-{value}\" value=\"{value}\"{checked}>\
<label for=\"method-{value}\" style=\"margin:0;font-weight:400\">{}</label></div>",
                esc(t.get(key, lang)),
                checked = if chosen == value { " checked" } else { "" },
            );
        }
        b.push_str("</fieldset>");
    }
    if entered.sms_offered {
        let _ = write!(
            b,
            "<label for=\"phone\">{label}</label><p class=\"help\" id=\"phone-help\">{help}</p>{err}\
<input type=\"tel\" id=\"phone\" name=\"phone\" autocomplete=\"tel\" value=\"{value}\" {d}>",
            label = esc(t.get("field_phone", lang)),
            help = esc(t.get("field_phone_help", lang)),
            err = error_line(t, lang, errors, "phone"),
            value = esc(&entered.phone),
            d = described(errors, "phone"),
        );
    }
    let _ = write!(
        b,
        "<label for=\"email\">{label}</label><p class=\"help\" id=\"email-help\">{help}</p>{err}\
<input type=\"email\" id=\"email\" name=\"email\" autocomplete=\"email\" value=\"{value}\" {d}>\
<button type=\"submit\">{cont}</button></form>",
        label = esc(t.get("field_email", lang)),
        help = esc(t.get("field_email_help", lang)),
        err = error_line(t, lang, errors, "email"),
        value = esc(&entered.email),
        d = described(errors, "email"),
        cont = esc(t.get("continue", lang)),
    );
    let title = t.get(&format!("right_{}", right.key), lang);
    layout(
        t,
        lang,
        title,
        &format!("/{}/begin/{}", other(lang), right.key),
        &b,
        false,
    )
}

/// The code form.
pub fn code(
    t: &Texts,
    lang: Lang,
    sms: bool,
    errors: &BTreeMap<&'static str, &'static str>,
) -> String {
    let l = lang.code();
    let b = format!(
        "{sum}<p>{sent}</p><form method=\"post\" action=\"/{l}/code\" novalidate>\
<label for=\"code\">{label}</label><p class=\"help\" id=\"code-help\"></p>{err}\
<input type=\"text\" id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" {d}>\
<button type=\"submit\">{send}</button></form>",
        sum = summary(t, lang, errors),
        sent = esc(t.get(if sms { "code_sent_sms" } else { "code_sent" }, lang)),
        label = esc(t.get("field_code", lang)),
        err = error_line(t, lang, errors, "code"),
        d = described(errors, "code"),
        send = esc(t.get("send_request", lang)),
    );
    layout(
        t,
        lang,
        t.get("code_title", lang),
        &format!("/{}/code", other(lang)),
        &b,
        false,
    )
}

/// A message and a way back to the start.
pub fn notice(t: &Texts, lang: Lang, key: &str) -> String {
    let b = format!(
        "<p role=\"alert\">{}</p><p><a href=\"/{}/\">{}</a></p>",
        esc(t.get(key, lang)),
        lang.code(),
        esc(t.get("start_again", lang))
    );
    layout(
        t,
        lang,
        t.get("site_title", lang),
        &format!("/{}/", other(lang)),
        &b,
        false,
    )
}

/// What the status page shows.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The right's key.
    pub right: String,
    /// The controller's name.
    pub company: String,
    /// The key of the state's text.
    pub state_key: &'static str,
    /// Still being worked on (the page refreshes itself).
    pub open: bool,
    /// Refused.
    pub rejected: bool,
    /// Received on.
    pub received: String,
    /// Due by.
    pub due: String,
    /// Months of extension and the reason.
    pub extension: Option<(u32, String)>,
    /// The request's id.
    pub reference: String,
    /// The answer's files, with the date they go.
    pub files: Vec<String>,
    /// When the files are deleted.
    pub expires: String,
    /// Whether the report can be read in the page.
    pub report: bool,
}

/// The request's page.
pub fn status(t: &Texts, lang: Lang, s: &Status) -> String {
    let l = lang.code();
    let mut b = format!(
        "<dl><dt>{k_kind}</dt><dd>{kind}</dd><dt>{k_company}</dt><dd>{company}</dd>\
<dt>{k_state}</dt><dd role=\"status\">{state}</dd><dt>{k_received}</dt><dd>{received}</dd>\
<dt>{k_due}</dt><dd>{due}</dd><dt>{k_ref}</dt><dd translate=\"no\">{reference}</dd></dl>",
        k_kind = esc(t.get("status_kind", lang)),
        kind = esc(t.get(&format!("right_{}", s.right), lang)),
        k_company = esc(t.get("status_company", lang)),
        company = esc(&s.company),
        k_state = esc(t.get("status_state", lang)),
        state = esc(t.get(s.state_key, lang)),
        k_received = esc(t.get("status_received", lang)),
        received = esc(&s.received),
        k_due = esc(t.get("status_due", lang)),
        due = esc(&s.due),
        k_ref = esc(t.get("status_reference", lang)),
        reference = esc(&s.reference),
    );
    if let Some((months, reason)) = &s.extension {
        let _ = write!(
            b,
            "<p>{} {months} {} {}</p>",
            esc(t.get("status_extended", lang)),
            esc(t.get("status_months", lang)),
            esc(reason)
        );
    }
    if s.rejected {
        let _ = write!(b, "<p>{}</p>", esc(t.get("status_rejected_help", lang)));
    }
    if s.open {
        let _ = write!(b, "<p>{}</p>", esc(t.get("status_refresh", lang)));
    }
    if !s.files.is_empty() {
        let _ = write!(b, "<h2>{}</h2>", esc(t.get("package_title", lang)));
        if s.report {
            let _ = write!(
                b,
                "<p><a href=\"/{l}/report\">{}</a></p>",
                esc(t.get("package_report", lang))
            );
        }
        let _ = write!(b, "<p>{}</p><ul>", esc(t.get("package_files", lang)));
        for f in &s.files {
            let _ = write!(
                b,
                "<li><a href=\"/{l}/files/{f}\" download>{f}</a></li>",
                f = esc(f)
            );
        }
        let _ = write!(
            b,
            "</ul><p>{} {}</p>",
            esc(t.get("package_expires", lang)),
            esc(&s.expires)
        );
    }
    let _ = write!(
        b,
        "<p><a href=\"/{l}/\">{}</a></p>",
        esc(t.get("start_again", lang))
    );
    layout(
        t,
        lang,
        t.get("status_title", lang),
        &format!("/{}/status", other(lang)),
        &b,
        s.open,
    )
}

/// What a person typed into the incident or complaint form, to show again
/// with the errors.
#[derive(Clone, Debug, Default)]
pub struct Reported {
    /// The company chosen (complaints).
    pub controller: String,
    /// What they wrote.
    pub text: String,
    /// Their email address (complaints).
    pub email: String,
    /// A request's reference (complaints).
    pub request: String,
}

/// A text area named `name`, its label the text `label` and its help
/// `label_help`.
fn textarea(
    t: &Texts,
    lang: Lang,
    errors: &BTreeMap<&'static str, &'static str>,
    name: &'static str,
    label: &str,
    value: &str,
) -> String {
    let help = format!("{label}_help");
    format!(
        "<label for=\"{name}\">{label}</label><p class=\"help\" id=\"{name}-help\">{help}</p>{err}\
<textarea id=\"{name}\" name=\"{name}\" rows=\"6\" {d}>{value}</textarea>",
        label = esc(t.get(label, lang)),
        help = esc(t.get(&help, lang)),
        err = error_line(t, lang, errors, name),
        d = described(errors, name),
        value = esc(value),
    )
}

/// An input of `kind` named `name`, its label the text `label` and its
/// help `label_help`.
fn input(
    t: &Texts,
    lang: Lang,
    errors: &BTreeMap<&'static str, &'static str>,
    name: &'static str,
    kind: &str,
    label: &str,
    value: &str,
) -> String {
    let help = format!("{label}_help");
    format!(
        "<label for=\"{name}\">{label}</label><p class=\"help\" id=\"{name}-help\">{help}</p>{err}\
<input type=\"{kind}\" id=\"{name}\" name=\"{name}\" value=\"{value}\" {d}>",
        label = esc(t.get(label, lang)),
        help = esc(t.get(&help, lang)),
        err = error_line(t, lang, errors, name),
        d = described(errors, name),
        value = esc(value),
    )
}

/// The form to report a personal-data incident (the policy, section 6).
pub fn incident_form(
    t: &Texts,
    lang: Lang,
    entered: &Reported,
    errors: &BTreeMap<&'static str, &'static str>,
) -> String {
    let l = lang.code();
    let mut b = summary(t, lang, errors);
    let _ = write!(
        b,
        "<p>{}</p><form method=\"post\" action=\"/{l}/incident\" novalidate>{}<button type=\"submit\">{}</button></form>",
        esc(t.get("incident_intro", lang)),
        textarea(t, lang, errors, "text", "field_incident", &entered.text),
        esc(t.get("incident_send", lang)),
    );
    layout(
        t,
        lang,
        t.get("incident_title", lang),
        &format!("/{}/incident", other(lang)),
        &b,
        false,
    )
}

/// The form to complain to the DPO (the policy, section 3.2).
pub fn complaint_form(
    t: &Texts,
    lang: Lang,
    controllers: &[(String, String)],
    entered: &Reported,
    errors: &BTreeMap<&'static str, &'static str>,
) -> String {
    let l = lang.code();
    let mut b = summary(t, lang, errors);
    let _ = write!(
        b,
        "<p>{}</p><form method=\"post\" action=\"/{l}/complaint\" novalidate>",
        esc(t.get("complaint_intro", lang)),
    );
    b.push_str(&controller_choice(
        t,
        lang,
        controllers,
        &entered.controller,
        errors,
    ));
    b.push_str(&textarea(
        t,
        lang,
        errors,
        "text",
        "field_complaint",
        &entered.text,
    ));
    b.push_str(&input(
        t,
        lang,
        errors,
        "email",
        "email",
        "field_reply_email",
        &entered.email,
    ));
    b.push_str(&input(
        t,
        lang,
        errors,
        "request",
        "text",
        "field_request_reference",
        &entered.request,
    ));
    let _ = write!(
        b,
        "<button type=\"submit\">{}</button></form>",
        esc(t.get("complaint_send", lang))
    );
    layout(
        t,
        lang,
        t.get("complaint_title", lang),
        &format!("/{}/complaint", other(lang)),
        &b,
        false,
    )
}

/// The receipt of a report or a complaint: its reference and what comes
/// next.
pub fn received(t: &Texts, lang: Lang, title: &str, next: &str, reference: &str) -> String {
    let b = format!(
        "<p role=\"status\">{}</p><dl><dt>{}</dt><dd translate=\"no\" id=\"reference\">{}</dd></dl><p><a href=\"/{}/\">{}</a></p>",
        esc(next),
        esc(t.get("status_reference", lang)),
        esc(reference),
        lang.code(),
        esc(t.get("start_again", lang)),
    );
    layout(
        t,
        lang,
        t.get(title, lang),
        &format!("/{}/", other(lang)),
        &b,
        false,
    )
}

/// The form to see one's earlier requests.
pub fn fetch_form(
    t: &Texts,
    lang: Lang,
    email: &str,
    errors: &BTreeMap<&'static str, &'static str>,
) -> String {
    let l = lang.code();
    let mut b = summary(t, lang, errors);
    let _ = write!(
        b,
        "<p>{}</p><form method=\"post\" action=\"/{l}/fetch\" novalidate>{}<button type=\"submit\">{}</button></form>",
        esc(t.get("fetch_intro", lang)),
        input(
            t,
            lang,
            errors,
            "email",
            "email",
            "field_fetch_email",
            email
        ),
        esc(t.get("fetch_send", lang)),
    );
    layout(
        t,
        lang,
        t.get("fetch_title", lang),
        &format!("/{}/fetch", other(lang)),
        &b,
        false,
    )
}

/// One of the person's requests, as their list shows it.
#[derive(Clone, Debug)]
pub struct Mine {
    /// Its reference.
    pub id: String,
    /// The right (`access`, …).
    pub right: String,
    /// Received on.
    pub received: String,
    /// Its state's text key.
    pub state_key: &'static str,
}

/// The person's requests, each opening on its status page.
pub fn mine(t: &Texts, lang: Lang, rows: &[Mine]) -> String {
    let l = lang.code();
    let mut b = String::new();
    if rows.is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(t.get("mine_none", lang)));
    } else {
        b.push_str("<ul class=\"rights\" id=\"mine\">");
        for r in rows {
            let _ = write!(
                b,
                "<li><a href=\"/{l}/mine/{id}\">{right}</a><p class=\"help\">{received} · {state} · <span translate=\"no\">{id}</span></p></li>",
                id = esc(&r.id),
                right = esc(t.get(&format!("right_{}", r.right), lang)),
                received = esc(&r.received),
                state = esc(t.get(r.state_key, lang)),
            );
        }
        b.push_str("</ul>");
    }
    layout(
        t,
        lang,
        t.get("mine_title", lang),
        &format!("/{}/mine", other(lang)),
        &b,
        false,
    )
}

/// The group's companies as radio buttons, each with what it holds;
/// `chosen` checked.
fn controller_choice(
    t: &Texts,
    lang: Lang,
    controllers: &[(String, String)],
    chosen: &str,
    errors: &BTreeMap<&'static str, &'static str>,
) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<fieldset id=\"controller\" {d}><legend>{legend}</legend><p class=\"help\" id=\"controller-help\">{help}</p>{err}",
        d = described(errors, "controller"),
        legend = esc(t.get("field_company", lang)),
        help = esc(t.get("field_company_help", lang)),
        err = error_line(t, lang, errors, "controller"),
    );
    for (i, (org, name)) in controllers.iter().enumerate() {
        let _ = write!(
            b,
            "<div class=\"choice\"><input type=\"radio\" name=\"controller\" id=\"controller-{i}\" value=\"{org}\"{checked}>\
<label for=\"controller-{i}\" style=\"margin:0\">{name} <span class=\"help\" style=\"font-weight:400;display:block\">{what}</span></label></div>",
            org = esc(org),
            checked = if chosen == org { " checked" } else { "" },
            name = esc(name),
            what = esc(t.get(&format!("company_{org}"), lang)),
        );
    }
    b.push_str("</fieldset>");
    b
}
