//! Function traits for operators that need more than a closure.

/// An incremental aggregation (Flink's `AggregateFunction`): an accumulator per key (or window)
/// that records are added to one at a time, and a result read from it.
pub trait AggregateFunction<T>: Clone + Send + Sync + 'static {
    /// The accumulator (serializable: checkpoints keep it).
    type Acc: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static;
    /// The result.
    type Out: crate::Data;
    /// A new, empty accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Adds one record.
    fn add(&self, value: T, acc: &mut Self::Acc);
    /// The current result.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
    /// Merges `other` into `acc` (used when windows merge).
    fn merge(&self, other: Self::Acc, acc: &mut Self::Acc);
}
