//! A circuit breaker per deployment: after repeated failures the deployment rests for a
//! cooldown; then one probe request decides whether it is back.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// How long an open breaker refuses requests before letting one probe through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// A breaker's state, as reported in metrics (`0` closed, `1` open, `2` half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests pass.
    Closed,
    /// Requests are refused until the cooldown ends.
    Open,
    /// One probe is in flight; others are refused until it ends.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// The breaker of one deployment.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether a request may go to the deployment now. When an open breaker's cooldown has
    /// passed, this request is the probe: the breaker is half-open until it is reported.
    pub fn allow(&self) -> bool {
        let mut state = self.state.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    /// The deployment answered: the breaker closes.
    pub fn succeeded(&self) {
        *self.state.lock() = State::Closed { failures: 0 };
    }

    /// The deployment failed: one more failure, or a failed probe, opens the breaker.
    pub fn failed(&self) {
        let mut state = self.state.lock();
        let open = State::Open {
            until: Instant::now() + self.config.cooldown,
        };
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.config.failures => State::Closed {
                failures: failures + 1,
            },
            _ => open,
        };
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        match *self.state.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_repeated_failures_and_closes_after_a_good_probe() {
        let breaker = Breaker::new(BreakerConfig {
            failures: 3,
            cooldown: Duration::from_secs(10),
        });
        breaker.failed();
        breaker.failed();
        breaker.succeeded();
        breaker.failed();
        breaker.failed();
        assert!(breaker.allow(), "a success resets the count");
        breaker.failed();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allow());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(breaker.allow(), "the cooldown lets one probe through");
        assert!(!breaker.allow(), "only one probe at a time");
        breaker.failed();
        assert!(!breaker.allow(), "a failed probe opens it again");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(breaker.allow());
        breaker.succeeded();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.allow() && breaker.allow());
    }
}
