//! One row per recipient. List fields are JSON arrays in text columns: the
//! registry holds tens to hundreds of recipients and filters in memory.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "transfer_recipient")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub role: String,
    pub country: String,
    pub controllers: String,
    pub category_ids: String,
    pub system_ids: String,
    pub dpa_reference: String,
    pub safeguard: Option<String>,
    pub purpose: String,
    pub name_sv: String,
    pub purpose_sv: String,
    pub revision: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
