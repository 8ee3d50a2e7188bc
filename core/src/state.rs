//! [`TrialState`]: where a trial is in its life (see ARCHITECTURE.md's
//! "Trial states" for the transitions).

/// A trial's state, as stored and as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    Queued,
    Running,
    Succeeded,
    Diverged,
    Failed,
    Cancelled,
}

impl TrialState {
    pub const ALL: [TrialState; 6] = [
        TrialState::Queued,
        TrialState::Running,
        TrialState::Succeeded,
        TrialState::Diverged,
        TrialState::Failed,
        TrialState::Cancelled,
    ];

    /// The stored name (`trials.state`).
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Queued => "queued",
            TrialState::Running => "running",
            TrialState::Succeeded => "succeeded",
            TrialState::Diverged => "diverged",
            TrialState::Failed => "failed",
            TrialState::Cancelled => "cancelled",
        }
    }

    /// Reads [`TrialState::as_str`] back.
    pub fn parse(s: &str) -> Result<Self, String> {
        TrialState::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown trial state {}", crate::quote::short(s)))
    }

    /// Whether the trial is finished for good.
    pub fn is_final(self) -> bool {
        !matches!(self, TrialState::Queued | TrialState::Running)
    }
}

impl std::fmt::Display for TrialState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
