//! A sink that drops every record (Flink's `DiscardingSink`). Records still travel the whole
//! pipeline: the sink sits behind a dynamic call that the compiler cannot see through.

use weir_core::Result;
use weir_runtime::Output;
use weir_runtime::context::TaskEnv;
use weir_runtime::source::Sink;

/// Drops every record.
#[derive(Clone, Debug, Default)]
pub struct Discard;

impl<T: 'static> Sink<T> for Discard {
    fn name(&self) -> String {
        "Discard".into()
    }
    fn create_writer(&self, _env: &TaskEnv) -> Result<Box<dyn Output<T>>> {
        Ok(Box::new(weir_runtime::output::NullOutput))
    }
}
