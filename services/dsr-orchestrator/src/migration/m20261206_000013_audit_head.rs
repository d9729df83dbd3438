// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! The audit chain's head: one row holding the last event's sequence
//! number and hash, kept by a trigger on every event inserted (whichever
//! version of the orchestrator inserts it). An appender locks the row
//! (`FOR UPDATE`), which serialises appenders across replicas and reads the
//! head in one statement, where an advisory lock and a read of the newest
//! event took two. Started from the newest event already recorded. While
//! replicas of the previous version still run (a rolling upgrade), one of
//! them and a new one may give two events the same number: the number is
//! the key, so one transaction fails and its step is retried; the chain
//! stays whole.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

const CREATE: &str = "CREATE TABLE orchestrator_audit_head (\
     id SMALLINT NOT NULL PRIMARY KEY CHECK (id = 1), \
     seq BIGINT NOT NULL, \
     hash VARCHAR(64) NOT NULL)";

const UPDATE_HEAD: &str =
    "UPDATE orchestrator_audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared(CREATE).await?;
        db.execute_unprepared(&format!(
            "INSERT INTO orchestrator_audit_head (id, seq, hash) VALUES (1, 0, '{}')",
            dsr_domain::request::GENESIS
        ))
        .await?;
        db.execute_unprepared(
            "UPDATE orchestrator_audit_head SET \
             seq = (SELECT a.seq FROM orchestrator_audit a ORDER BY a.seq DESC LIMIT 1), \
             hash = (SELECT a.hash FROM orchestrator_audit a ORDER BY a.seq DESC LIMIT 1) \
             WHERE EXISTS (SELECT 1 FROM orchestrator_audit)",
        )
        .await?;
        match db.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(&format!(
                    "CREATE FUNCTION orchestrator_audit_head_follow() RETURNS trigger \
                     LANGUAGE plpgsql SET search_path FROM CURRENT \
                     AS $$ BEGIN {UPDATE_HEAD}; RETURN NULL; END $$"
                ))
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER orchestrator_audit_head_follow \
                     AFTER INSERT ON orchestrator_audit FOR EACH ROW \
                     EXECUTE FUNCTION orchestrator_audit_head_follow()",
                )
                .await?;
            }
            DbBackend::Sqlite => {
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER orchestrator_audit_head_follow \
                     AFTER INSERT ON orchestrator_audit BEGIN {UPDATE_HEAD}; END"
                ))
                .await?;
            }
            DbBackend::MySql => {
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER orchestrator_audit_head_follow \
                     AFTER INSERT ON orchestrator_audit FOR EACH ROW {UPDATE_HEAD}"
                ))
                .await?;
            }
            other => {
                return Err(DbErr::Migration(format!(
                    "the audit chain's head has no trigger for {other:?}"
                )));
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(
                "DROP TRIGGER IF EXISTS orchestrator_audit_head_follow ON orchestrator_audit",
            )
            .await?;
            db.execute_unprepared("DROP FUNCTION IF EXISTS orchestrator_audit_head_follow()")
                .await?;
        } else {
            db.execute_unprepared("DROP TRIGGER IF EXISTS orchestrator_audit_head_follow")
                .await?;
        }
        db.execute_unprepared("DROP TABLE orchestrator_audit_head")
            .await?;
        Ok(())
    }
}
