//! One error type for weir, classified by who is to blame and whether retrying can help.
//!
//! A data engineer reading an error wants to know three things: what went wrong, whether it is
//! something they must fix (their job, their input, their configuration), and whether the system
//! will recover by itself if it tries again. [`Error::blame`] and [`Error::is_retryable`] answer the
//! last two; the message answers the first and says what to do.

use std::io;
use std::path::PathBuf;

/// Result with weir's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who has to act for an error to go away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Blame {
    /// The user's job, input, arguments or configuration: retrying the same thing fails again.
    User,
    /// Something outside weir and outside the job: a file system, a network, a peer process.
    External,
    /// A bug in weir itself.
    Internal,
}

/// Everything that can go wrong in weir.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The job as written is not valid (parallelism 0, a forward edge between different
    /// parallelisms, a source given an impossible configuration, ...).
    #[error("invalid job: {0}")]
    InvalidJob(String),

    /// A job name that the application never registered.
    #[error(
        "unknown job '{name}'; this artifact registers: {}. Register the job with App::job or pick one of these names",
        if registered.is_empty() { "no jobs".to_string() } else { registered.join(", ") }
    )]
    UnknownJob {
        /// The name that was asked for.
        name: String,
        /// The names that are registered.
        registered: Vec<String>,
    },

    /// Arguments that do not deserialize into the job's argument type.
    #[error("invalid arguments for job '{job}': {message}. Pass a JSON value that matches the job's argument type")]
    InvalidArguments {
        /// The job the arguments were meant for.
        job: String,
        /// What the deserializer said.
        message: String,
    },

    /// A bad command line or configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An I/O failure on a named path.
    #[error("{context} '{}': {source}", path.display())]
    Io {
        /// What weir was doing, e.g. "cannot read input file".
        context: String,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A network failure talking to a named peer.
    #[error("{context} {peer}: {source}")]
    Network {
        /// What weir was doing.
        context: String,
        /// The address of the peer.
        peer: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Checkpoint storage (a directory or an object store) refused or failed an operation.
    #[error("{context} {location}: {message}")]
    Storage {
        /// What weir was doing, e.g. "cannot write".
        context: String,
        /// The object or directory, as a path or URL.
        location: String,
        /// What the store said.
        message: String,
        /// User for a missing object or refused credentials, External otherwise.
        blame: Blame,
        /// Whether trying again may succeed (an unreachable or failing store).
        retryable: bool,
    },

    /// The high-availability coordination service (etcd, ZooKeeper) refused or failed an operation.
    #[error("{context} ({service}): {message}")]
    Coordination {
        /// What weir was doing, e.g. "cannot renew the leader lease".
        context: String,
        /// The service, as `etcd at ADDRESS` or `ZooKeeper at ADDRESS`.
        service: String,
        /// What the service said, and what to do about it.
        message: String,
        /// Whether trying again may succeed (an unreachable or busy service).
        retryable: bool,
    },

    /// Another process or service weir works with failed, went away or answered what this version
    /// cannot use: the JobManager a TaskManager serves, the Docker engine, a peer of the control
    /// protocol. Nobody's configuration is wrong; the other side (or the network to it) is.
    #[error("{context}: {message}")]
    External {
        /// What weir was doing, naming the other side, e.g. "lost the JobManager at 10.0.0.5:6123".
        context: String,
        /// What happened, and what to do about it.
        message: String,
        /// Whether trying again may succeed (a peer that went away may come back; one that speaks
        /// another protocol will not).
        retryable: bool,
    },

    /// A command from a JobManager that no longer leads: its leadership was taken over (fencing).
    #[error("not the leader: {0}")]
    NotLeader(String),

    /// A subtask failed: a user function panicked or returned an error, or a source or sink failed.
    #[error("operator '{operator}' (subtask {}/{parallelism}) failed: {message}", subtask + 1)]
    Task {
        /// The name of the operator that failed.
        operator: String,
        /// Zero-based subtask index (printed one-based, as Flink does).
        subtask: u32,
        /// Parallelism of the operator.
        parallelism: u32,
        /// What happened.
        message: String,
        /// Who is to blame for the underlying failure.
        blame: Blame,
        /// Whether running the task again may succeed.
        retryable: bool,
        /// Whether it failed reading stored data that is damaged ([`Error::damaged`]), such as the
        /// snapshot it restored from.
        damaged: bool,
    },

    /// A job graph that does not match what this artifact builds for the same job and arguments:
    /// another build of the program, or a builder that is not deterministic.
    #[error("job graph mismatch for job '{job}': {message}")]
    GraphMismatch {
        /// The job's registered name.
        job: String,
        /// What differs, and what to do about it.
        message: String,
    },

    /// A peer task went away mid-stream. This is a consequence of another failure (or of
    /// cancellation), never a root cause: the job reports the failure that caused it.
    #[error("a peer task stopped mid-stream: {0}")]
    ChannelClosed(String),

    /// A job that ran on a cluster failed there.
    #[error("job {job} failed: {message}")]
    JobFailed {
        /// The job's id.
        job: String,
        /// The failure as the cluster reported it.
        message: String,
    },

    /// The job was cancelled before it finished.
    #[error("job {0} was cancelled")]
    Cancelled(String),

    /// A broken invariant inside weir: please report it.
    #[error("internal error (a bug in weir, please report it): {0}")]
    Internal(String),
}

impl Error {
    /// Who has to act for this error to go away.
    pub fn blame(&self) -> Blame {
        match self {
            Error::InvalidJob(_)
            | Error::UnknownJob { .. }
            | Error::InvalidArguments { .. }
            | Error::Config(_)
            | Error::GraphMismatch { .. }
            | Error::Cancelled(_) => Blame::User,
            Error::Io { source, .. } => io_blame(source),
            Error::Network { .. }
            | Error::External { .. }
            | Error::JobFailed { .. }
            | Error::Coordination { .. }
            | Error::NotLeader(_) => Blame::External,
            Error::Task { blame, .. } | Error::Storage { blame, .. } => *blame,
            Error::Internal(_) | Error::ChannelClosed(_) => Blame::Internal,
        }
    }

    /// Whether trying the same thing again may succeed without anybody changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { source, .. } | Error::Network { source, .. } => io_retryable(source),
            Error::Task { retryable, .. }
            | Error::Storage { retryable, .. }
            | Error::Coordination { retryable, .. }
            | Error::External { retryable, .. } => *retryable,
            Error::ChannelClosed(_) | Error::NotLeader(_) => true,
            _ => false,
        }
    }

    /// An [`Error::Io`] with context.
    pub fn io(context: impl Into<String>, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { context: context.into(), path: path.into(), source }
    }

    /// An [`Error::External`]: `context` names the other side, `message` says what happened.
    pub fn external(context: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        Error::External { context: context.into(), message: message.into(), retryable }
    }

    /// Stored data that is damaged (a checkpoint file, a state entry, a record that cannot be read
    /// as what wrote it): an [`Error::Storage`], nobody's configuration and not retryable.
    /// `location` names the file or store, `message` says what is wrong and what to do.
    pub fn damaged(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Storage {
            context: "damaged data in".into(),
            location: location.into(),
            message: message.into(),
            blame: Blame::External,
            retryable: false,
        }
    }

    /// Whether this is [`Error::damaged`]: stored data that cannot be read as what wrote it.
    pub fn is_damaged(&self) -> bool {
        match self {
            Error::Storage { context, .. } => context == "damaged data in",
            Error::Task { damaged, .. } => *damaged,
            _ => false,
        }
    }

    /// An [`Error::InvalidJob`].
    pub fn invalid_job(message: impl Into<String>) -> Self {
        Error::InvalidJob(message.into())
    }

    /// An [`Error::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }
}

fn io_blame(e: &io::Error) -> Blame {
    use io::ErrorKind::*;
    match e.kind() {
        NotFound | PermissionDenied | InvalidInput | InvalidData | AlreadyExists | IsADirectory | NotADirectory => {
            Blame::User
        }
        _ => Blame::External,
    }
}

fn io_retryable(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | TimedOut
            | Interrupted
            | WouldBlock
            | UnexpectedEof
            | StorageFull
            | HostUnreachable
            | NetworkUnreachable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_cause() {
        let missing = Error::io("cannot read", "/nope", io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(missing.blame(), Blame::User);
        assert!(!missing.is_retryable());
        let refused = Error::Network {
            context: "cannot connect to".into(),
            peer: "127.0.0.1:1".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(refused.blame(), Blame::External);
        assert!(refused.is_retryable());
        assert_eq!(Error::internal("x").blame(), Blame::Internal);
        let lost = Error::external("lost the JobManager at 10.0.0.5:6123", "it closed the connection", true);
        assert_eq!(lost.blame(), Blame::External);
        assert!(lost.is_retryable());
        assert_eq!(lost.to_string(), "lost the JobManager at 10.0.0.5:6123: it closed the connection");
        let garbled = crate::protocol::decode::<crate::protocol::ToJobManager>(b"{not json").err();
        assert!(
            garbled.as_ref().is_some_and(|e| e.blame() == Blame::External && !e.is_retryable()),
            "a peer's unreadable message is the peer's fault, and final: {garbled:?}"
        );
    }

    #[test]
    fn unknown_job_lists_the_registered_ones() {
        let e = Error::UnknownJob { name: "wc".into(), registered: vec!["wordcount".into(), "keyed".into()] };
        let text = e.to_string();
        assert!(text.contains("'wc'") && text.contains("wordcount, keyed"), "{text}");
    }

    #[test]
    fn task_errors_print_one_based_subtasks() {
        let e = Error::Task {
            operator: "map".into(),
            subtask: 0,
            parallelism: 4,
            message: "boom".into(),
            blame: Blame::User,
            retryable: false,
            damaged: false,
        };
        assert_eq!(e.to_string(), "operator 'map' (subtask 1/4) failed: boom");
    }
}
