//! Why a delivery leaves the deliver stage without an attempt: the
//! dispatcher decides it, the metrics count it by this name.

/// Why a delivery leaves the deliver stage without an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkReason {
    /// Its endpoint has requests under way and answers none.
    Stalled,
    /// Most recent attempts were slow.
    Struggling,
    /// Its rate limit holds its backlog back for longer than it may wait.
    RateBound,
    /// The endpoint asked for a pause (`Retry-After`).
    RetryAfter,
    /// Its circuit is open (or half open, its one probe under way).
    CircuitOpen,
    /// Its subscription or tenant holds all it may.
    OverBudget,
    /// Its `ordered` lane is parked: it waits behind the lane's head.
    LaneParked,
}

impl ParkReason {
    pub const ALL: [Self; 7] = [
        Self::Stalled,
        Self::Struggling,
        Self::RateBound,
        Self::RetryAfter,
        Self::CircuitOpen,
        Self::OverBudget,
        Self::LaneParked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stalled => "stalled",
            Self::Struggling => "struggling",
            Self::RateBound => "rate_bound",
            Self::RetryAfter => "retry_after",
            Self::CircuitOpen => "circuit_open",
            Self::OverBudget => "over_budget",
            Self::LaneParked => "lane_parked",
        }
    }
}
