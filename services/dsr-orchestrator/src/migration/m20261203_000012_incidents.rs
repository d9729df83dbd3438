// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Personal-data breaches (the register, Art. 33(5)), the people a breach
//! touches (kept only until their notices are queued), complaints to the
//! DPO, and letters that go to an address of their own (a breach notice, a
//! complaint's answer) rather than to a request's person.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum OrchestratorIncident {
    Table,
    Id,
    Summary,
    StartedAt,
    DiscoveredAt,
    ReportedAt,
    Source,
    ReportedBy,
    SystemIds,
    CategoryIds,
    ApproximatePeople,
    Containment,
    Risk,
    RiskReasoning,
    Consequences,
    Measures,
    Affected,
    AuthorityNotifiedAt,
    AuthorityReference,
    LateReason,
    NoticesStartedAt,
    NoticeException,
    NoticeExceptionExplanation,
    RemedialAction,
    ClosedAt,
}

#[derive(DeriveIden)]
enum OrchestratorIncidentPerson {
    Table,
    Id,
    IncidentId,
    Controller,
    Contacts,
    Language,
}

#[derive(DeriveIden)]
enum OrchestratorComplaint {
    Table,
    Id,
    Controller,
    Text,
    ReplyTo,
    Language,
    RequestIds,
    FiledAt,
    AnswerDue,
    FiledBy,
    Answer,
    AnsweredAt,
    AnsweredBy,
}

#[derive(DeriveIden)]
enum OrchestratorLetter {
    Table,
    ToIdentity,
    Language,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(OrchestratorIncident::Table)
                .if_not_exists()
                .col(string(OrchestratorIncident::Id).primary_key())
                .col(text(OrchestratorIncident::Summary))
                .col(timestamp_with_time_zone_null(
                    OrchestratorIncident::StartedAt,
                ))
                .col(timestamp_with_time_zone(OrchestratorIncident::DiscoveredAt))
                .col(timestamp_with_time_zone(OrchestratorIncident::ReportedAt))
                .col(string(OrchestratorIncident::Source))
                .col(string(OrchestratorIncident::ReportedBy))
                .col(text(OrchestratorIncident::SystemIds))
                .col(text(OrchestratorIncident::CategoryIds))
                .col(big_integer(OrchestratorIncident::ApproximatePeople))
                .col(text(OrchestratorIncident::Containment))
                .col(string_null(OrchestratorIncident::Risk))
                .col(text_null(OrchestratorIncident::RiskReasoning))
                .col(text_null(OrchestratorIncident::Consequences))
                .col(text_null(OrchestratorIncident::Measures))
                .col(text_null(OrchestratorIncident::Affected))
                .col(timestamp_with_time_zone_null(
                    OrchestratorIncident::AuthorityNotifiedAt,
                ))
                .col(string_null(OrchestratorIncident::AuthorityReference))
                .col(text_null(OrchestratorIncident::LateReason))
                .col(timestamp_with_time_zone_null(
                    OrchestratorIncident::NoticesStartedAt,
                ))
                .col(string_null(OrchestratorIncident::NoticeException))
                .col(text_null(OrchestratorIncident::NoticeExceptionExplanation))
                .col(text_null(OrchestratorIncident::RemedialAction))
                .col(timestamp_with_time_zone_null(
                    OrchestratorIncident::ClosedAt,
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_orchestrator_incident_discovered")
                .table(OrchestratorIncident::Table)
                .col(OrchestratorIncident::DiscoveredAt)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(OrchestratorIncidentPerson::Table)
                .if_not_exists()
                .col(big_pk_auto(OrchestratorIncidentPerson::Id))
                .col(string(OrchestratorIncidentPerson::IncidentId))
                .col(string(OrchestratorIncidentPerson::Controller))
                .col(text(OrchestratorIncidentPerson::Contacts))
                .col(string(OrchestratorIncidentPerson::Language))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_orchestrator_incident_person_incident")
                .table(OrchestratorIncidentPerson::Table)
                .col(OrchestratorIncidentPerson::IncidentId)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(OrchestratorComplaint::Table)
                .if_not_exists()
                .col(string(OrchestratorComplaint::Id).primary_key())
                .col(string(OrchestratorComplaint::Controller))
                .col(text(OrchestratorComplaint::Text))
                .col(text_null(OrchestratorComplaint::ReplyTo))
                .col(string(OrchestratorComplaint::Language))
                .col(text(OrchestratorComplaint::RequestIds))
                .col(timestamp_with_time_zone(OrchestratorComplaint::FiledAt))
                .col(timestamp_with_time_zone(OrchestratorComplaint::AnswerDue))
                .col(string(OrchestratorComplaint::FiledBy))
                .col(text_null(OrchestratorComplaint::Answer))
                .col(timestamp_with_time_zone_null(
                    OrchestratorComplaint::AnsweredAt,
                ))
                .col(string_null(OrchestratorComplaint::AnsweredBy))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_orchestrator_complaint_due")
                .table(OrchestratorComplaint::Table)
                .col(OrchestratorComplaint::AnswerDue)
                .to_owned(),
        )
        .await?;
        for mut c in [
            text_null(OrchestratorLetter::ToIdentity),
            string_null(OrchestratorLetter::Language),
        ] {
            m.alter_table(
                Table::alter()
                    .table(OrchestratorLetter::Table)
                    .add_column(&mut c)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in [OrchestratorLetter::ToIdentity, OrchestratorLetter::Language] {
            m.alter_table(
                Table::alter()
                    .table(OrchestratorLetter::Table)
                    .drop_column(c)
                    .to_owned(),
            )
            .await?;
        }
        m.drop_table(Table::drop().table(OrchestratorComplaint::Table).to_owned())
            .await?;
        m.drop_table(
            Table::drop()
                .table(OrchestratorIncidentPerson::Table)
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table(OrchestratorIncident::Table).to_owned())
            .await
    }
}
