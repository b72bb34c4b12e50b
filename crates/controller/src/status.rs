//! ExternalSecret status as ESO writes it: the `Ready` condition (ESO's reasons and messages,
//! `lastTransitionTime` kept while the status stays the same), `refreshTime`,
//! `syncedResourceVersion`, `binding`; and ESO's refresh rule (`shouldRefresh`).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use kube::api::{Api, Patch, PatchParams};
use refsync_core::api::{Condition, ExternalSecret, ExternalSecretStatus, RefreshPolicy};

use crate::context::FIELD_MANAGER;
use crate::error::{Error, Result};

pub const CONDITION_READY: &str = "Ready";

pub const REASON_SYNCED: &str = "SecretSynced";
pub const REASON_SYNCED_ERROR: &str = "SecretSyncedError";
pub const REASON_DELETED: &str = "SecretDeleted";
pub const REASON_MISSING: &str = "SecretMissing";

pub const MSG_SYNCED: &str = "secret synced";
pub const MSG_SYNCED_RETAIN: &str = "secret retained due to DeletionPolicy=Retain";
pub const MSG_DELETED: &str = "secret deleted due to DeletionPolicy=Delete";
pub const MSG_MISSING: &str = "secret will not be created due to CreationPolicy=Merge";
pub const MSG_ERROR_GET_SECRET_DATA: &str = "could not get secret data from provider";
pub const MSG_ERROR_DELETE_SECRET: &str = "could not delete secret";
pub const MSG_ERROR_DELETE_ORPHANED: &str = "could not delete orphaned secrets";
pub const MSG_ERROR_UPDATE_SECRET: &str = "could not update secret";
pub const MSG_ERROR_UPDATE_IMMUTABLE: &str = "could not update secret, target is immutable";
pub const MSG_ERROR_IS_OWNED: &str = "target is owned by another ExternalSecret";

/// Event reasons and messages (ESO's).
pub const EVENT_CREATED: &str = "Created";
pub const EVENT_UPDATED: &str = "Updated";
pub const EVENT_DELETED: &str = "Deleted";
pub const EVENT_UPDATE_FAILED: &str = "UpdateFailed";
pub const EVENT_MISSING_PROVIDER_SECRET: &str = "MissingProviderSecret";
/// The finalizer newer ESO versions put on every ExternalSecret. refsync does not add it (the
/// garbage collector already removes owned Secrets) but honours it: without that, deleting an
/// ExternalSecret that ESO once reconciled would hang after a switch to refsync.
pub const FINALIZER_CLEANUP: &str = "externalsecrets.external-secrets.io/externalsecret-cleanup";
pub const NOTE_CREATED: &str = "secret created";
pub const NOTE_UPDATED: &str = "secret updated";
pub const NOTE_DELETED: &str = "secret deleted due to DeletionPolicy=Delete";
pub const NOTE_DELETED_ORPHANED: &str = "secret deleted because it was orphaned";

/// A Kubernetes timestamp (`metav1.Time`: RFC 3339, whole seconds, UTC).
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The `Ready` condition of a status.
pub fn ready(status: &ExternalSecretStatus) -> Option<&Condition> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
}

/// ESO's `SetExternalSecretCondition`: an identical condition is kept as is; a new reason or
/// message with the same status keeps `lastTransitionTime`; a new status gets `now`.
pub fn set_condition(
    status: &mut ExternalSecretStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) {
    let st = if ok { "True" } else { "False" };
    let current = status.conditions.iter().find(|c| c.type_ == type_);
    if let Some(c) = current
        && c.status == st
        && c.reason.as_deref() == Some(reason)
        && c.message.as_deref() == Some(message)
    {
        return;
    }
    let last_transition_time = match current {
        Some(c) if c.status == st => c.last_transition_time.clone(),
        _ => Some(timestamp(now)),
    };
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(Condition {
        type_: type_.to_string(),
        status: st.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_transition_time,
    });
}

/// ESO's `markAsDone`: `Ready=True` with `reason`, `refreshTime` = start of this sync,
/// `syncedResourceVersion` = the ExternalSecret's current one.
pub fn mark_done(
    status: &mut ExternalSecretStatus,
    reason: &str,
    message: &str,
    srv: &str,
    start: DateTime<Utc>,
) {
    set_condition(status, CONDITION_READY, true, reason, message, start);
    status.refresh_time = Some(timestamp(start));
    status.synced_resource_version = Some(srv.to_string());
}

/// ESO's `markAsFailed` (the condition part; the Event and counter are the caller's).
pub fn mark_failed(status: &mut ExternalSecretStatus, message: &str, now: DateTime<Utc>) {
    set_condition(
        status,
        CONDITION_READY,
        false,
        REASON_SYNCED_ERROR,
        message,
        now,
    );
}

/// ESO's `shouldRefresh`: whether the remote data must be read again now.
pub fn should_refresh(
    policy: Option<RefreshPolicy>,
    interval: Duration,
    status: &ExternalSecretStatus,
    srv: &str,
    now: DateTime<Utc>,
) -> bool {
    let synced = status
        .synced_resource_version
        .as_deref()
        .filter(|s| !s.is_empty());
    let refreshed = status.refresh_time.as_deref().and_then(parse_time);
    match policy.unwrap_or_default() {
        RefreshPolicy::CreatedOnce => synced.is_none() || refreshed.is_none(),
        RefreshPolicy::OnChange => synced.is_none() || refreshed.is_none() || synced != Some(srv),
        RefreshPolicy::Periodic => {
            if interval.is_zero() && synced.is_some() {
                return false;
            }
            if synced != Some(srv) {
                return true;
            }
            let Some(at) = refreshed else {
                return true;
            };
            if at > now {
                return true;
            }
            let next = at + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
            next < now
        }
    }
}

/// ESO's `getRequeueResult`: time until the next refresh (`None`: never, interval 0), plus up
/// to `jitter` × interval of random delay so ExternalSecrets created together spread out.
pub fn next_refresh(
    interval: Duration,
    status: &ExternalSecretStatus,
    now: DateTime<Utc>,
    jitter: f64,
) -> Option<Duration> {
    if interval.is_zero() {
        return None;
    }
    let remaining = match status.refresh_time.as_deref().and_then(parse_time) {
        None => interval,
        Some(at) if at > now => Duration::ZERO,
        Some(at) => {
            let since = (now - at).to_std().unwrap_or_default();
            interval.saturating_sub(since)
        }
    };
    let jitter = jitter.clamp(0.0, 1.0);
    let extra = if jitter > 0.0 {
        interval.mul_f64(jitter * rand::random::<f64>())
    } else {
        Duration::ZERO
    };
    // Never spin: a refresh already due runs after a short pause.
    Some((remaining + extra).max(Duration::from_millis(100)))
}

/// Writes the status with server-side apply on the status subresource.
/// Writes `status` (server-side apply); returns the ExternalSecret's new `resourceVersion`.
pub async fn write(
    api: &Api<ExternalSecret>,
    name: &str,
    status: &ExternalSecretStatus,
) -> Result<Option<String>> {
    let body = serde_json::json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "status": status,
    });
    let written = api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| Error::kube(format!("update status of ExternalSecret {name}"), e))?;
    Ok(written.metadata.resource_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let mut st = ExternalSecretStatus::default();
        set_condition(
            &mut st,
            "Ready",
            true,
            REASON_SYNCED,
            MSG_SYNCED,
            at("2024-01-01T00:00:00Z"),
        );
        set_condition(
            &mut st,
            "Ready",
            true,
            REASON_SYNCED,
            MSG_SYNCED_RETAIN,
            at("2024-01-01T00:01:00Z"),
        );
        assert_eq!(st.conditions.len(), 1);
        assert_eq!(
            st.conditions[0].last_transition_time.as_deref(),
            Some("2024-01-01T00:00:00Z")
        );
        assert_eq!(st.conditions[0].message.as_deref(), Some(MSG_SYNCED_RETAIN));
        mark_failed(
            &mut st,
            MSG_ERROR_GET_SECRET_DATA,
            at("2024-01-01T00:02:00Z"),
        );
        assert_eq!(st.conditions[0].status, "False");
        assert_eq!(
            st.conditions[0].last_transition_time.as_deref(),
            Some("2024-01-01T00:02:00Z")
        );
    }

    #[test]
    fn refresh_rules() {
        let h = Duration::from_secs(3600);
        let now = at("2024-01-01T01:00:00Z");
        let mut st = ExternalSecretStatus::default();
        assert!(should_refresh(None, h, &st, "1-x", now));
        st.synced_resource_version = Some("1-x".into());
        st.refresh_time = Some("2024-01-01T00:30:00Z".into());
        assert!(!should_refresh(None, h, &st, "1-x", now));
        assert!(should_refresh(None, h, &st, "2-x", now));
        assert!(should_refresh(
            None,
            Duration::from_secs(60),
            &st,
            "1-x",
            now
        ));
        assert!(!should_refresh(None, Duration::ZERO, &st, "2-x", now));
        assert!(!should_refresh(
            Some(RefreshPolicy::CreatedOnce),
            h,
            &st,
            "2-x",
            now
        ));
        assert!(should_refresh(
            Some(RefreshPolicy::OnChange),
            h,
            &st,
            "2-x",
            now
        ));
        assert!(!should_refresh(
            Some(RefreshPolicy::OnChange),
            Duration::from_secs(1),
            &st,
            "1-x",
            now
        ));
        let n = next_refresh(h, &st, now, 0.0).unwrap();
        assert_eq!(n, Duration::from_secs(1800));
        assert!(next_refresh(Duration::ZERO, &st, now, 0.1).is_none());
        let j = next_refresh(h, &st, now, 0.5).unwrap();
        assert!(j >= Duration::from_secs(1800) && j <= Duration::from_secs(3600));
    }
}
