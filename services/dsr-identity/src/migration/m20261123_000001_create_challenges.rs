// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum IdentityChallenge {
    Table,
    Id,
    Method,
    Identities,
    IdentityHash,
    CodeHash,
    Attempts,
    State,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum IdentityAttempt {
    Table,
    Id,
    ChallengeId,
    Method,
    Outcome,
    Actor,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(IdentityChallenge::Table)
                .if_not_exists()
                .col(string(IdentityChallenge::Id).primary_key())
                .col(string(IdentityChallenge::Method))
                .col(text(IdentityChallenge::Identities))
                .col(string(IdentityChallenge::IdentityHash))
                .col(string(IdentityChallenge::CodeHash))
                .col(integer(IdentityChallenge::Attempts))
                .col(string(IdentityChallenge::State))
                .col(timestamp_with_time_zone(IdentityChallenge::CreatedAt))
                .col(timestamp_with_time_zone(IdentityChallenge::ExpiresAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_identity_challenge_hash_created")
                .table(IdentityChallenge::Table)
                .col(IdentityChallenge::IdentityHash)
                .col(IdentityChallenge::CreatedAt)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(IdentityAttempt::Table)
                .if_not_exists()
                .col(pk_auto(IdentityAttempt::Id))
                .col(string(IdentityAttempt::ChallengeId))
                .col(string(IdentityAttempt::Method))
                .col(string(IdentityAttempt::Outcome))
                .col(string(IdentityAttempt::Actor))
                .col(timestamp_with_time_zone(IdentityAttempt::At))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(IdentityAttempt::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(IdentityChallenge::Table).to_owned())
            .await
    }
}
