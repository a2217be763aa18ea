//! The HTTP services served beside the MCP endpoint, as on the seed deployment's first host:
//! the user service ([`users`], port 8100) and the event service ([`events`], port 8101).
//! Both are built on `isa_core::http`: errors in its envelope, its `/health`, its overload and
//! body-size limits. Each describes itself at `GET /openapi.json`.

pub mod agent_handoff;
pub mod events;
pub(crate) mod openapi;
pub mod users;

use chrono::{DateTime, Duration, Utc};
use isa_core::Error;

/// The period a report covers: up to `until` (now when absent), from `since` (when absent, the
/// `span` before `until`). Dates at the edge of the calendar are a 400, not an overflow.
pub(crate) fn period(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    span: Duration,
) -> isa_core::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let until = until.unwrap_or_else(Utc::now);
    let since = match since {
        Some(since) => since,
        None => until
            .checked_sub_signed(span)
            .ok_or_else(|| Error::invalid("until is too early for the default period"))?,
    };
    if since > until {
        return Err(Error::invalid("since is after until"));
    }
    Ok((since, until))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_at_the_edge_of_the_calendar_is_refused_not_overflowed() {
        let earliest = DateTime::<Utc>::MIN_UTC;
        assert!(matches!(
            period(None, Some(earliest), Duration::days(1)),
            Err(Error::InvalidInput(_))
        ));
        assert_eq!(
            period(Some(earliest), Some(earliest), Duration::days(1)).unwrap(),
            (earliest, earliest)
        );
        let now = Utc::now();
        assert_eq!(
            period(None, Some(now), Duration::days(30)).unwrap(),
            (now - Duration::days(30), now)
        );
        assert!(matches!(
            period(
                Some(now),
                Some(now - Duration::seconds(1)),
                Duration::days(1)
            ),
            Err(Error::InvalidInput(_))
        ));
    }
}
