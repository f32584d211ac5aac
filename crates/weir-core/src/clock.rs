//! Wall-clock time as every process reports it: milliseconds since the Unix epoch (Flink's
//! timestamps in REST answers, checkpoint and job histories, processing time).

/// Milliseconds since the Unix epoch; 0 on a clock set before it.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
