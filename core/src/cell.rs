//! [`Cell`]: one combination of factor levels, the unit a report's rows and
//! effects are made of. Canonically a map sorted by factor name; shown in
//! the schema's key order with its labels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::level::Level;
use crate::schema::Schema;

/// The factor levels of one cell, keyed by factor name (sorted: the
/// canonical JSON form, part of trial identity).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cell(pub BTreeMap<String, Level>);

impl Cell {
    pub fn get(&self, factor: &str) -> Option<&Level> {
        self.0.get(factor)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Level)> {
        self.0.iter()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn insert(&mut self, factor: impl Into<String>, level: Level) {
        self.0.insert(factor.into(), level);
    }

    /// The canonical JSON text (sorted keys, typed values): what the store
    /// keeps and groups by.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("a cell always serialises")
    }

    /// Reads [`Cell::canonical`] text back.
    pub fn from_json(text: &str) -> Result<Cell, String> {
        serde_json::from_str(text).map_err(|e| format!("not a cell: {e}"))
    }

    /// The factor names in display order: the schema's key order, then any
    /// name it does not know, sorted.
    pub fn ordered_names<'a>(&'a self, schema: &Schema) -> Vec<&'a str> {
        let mut names: Vec<&str> = self.names().collect();
        names.sort_by_key(|n| (schema.position(n), *n));
        names
    }

    /// A short human label in display order, e.g.
    /// `depth=32 skip=on init=default bn=on`.
    pub fn label(&self, schema: &Schema) -> String {
        self.ordered_names(schema)
            .into_iter()
            .map(|n| format!("{}={}", schema.label(n), self.0[n].display()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl FromIterator<(String, Level)> for Cell {
    fn from_iter<I: IntoIterator<Item = (String, Level)>>(iter: I) -> Self {
        Cell(iter.into_iter().collect())
    }
}
