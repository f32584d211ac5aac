//! A sink printing records to standard output, as Flink's `print()`: with a `N> ` prefix naming
//! the (one-based) subtask when the sink runs in parallel.

use std::io::Write;

use weir_core::{Error, Result};
use weir_runtime::Output;
use weir_runtime::context::TaskEnv;
use weir_runtime::output::Batch;
use weir_runtime::source::Sink;

/// Prints each record's `Debug` form on its own line.
#[derive(Clone, Debug, Default)]
pub struct Print;

impl<T: std::fmt::Debug + 'static> Sink<T> for Print {
    fn name(&self) -> String {
        "Print to Std. Out".into()
    }
    fn create_writer(&self, env: &TaskEnv) -> Result<Box<dyn Output<T>>> {
        let prefix = if env.op.parallelism > 1 { format!("{}> ", env.op.subtask + 1) } else { String::new() };
        Ok(Box::new(PrintWriter { prefix, line: String::new() }))
    }
}

struct PrintWriter {
    prefix: String,
    line: String,
}

impl<T: std::fmt::Debug> Output<T> for PrintWriter {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        use std::fmt::Write as _;
        self.line.clear();
        batch.timestamps = None;
        for r in batch.records.drain(..) {
            let _ = writeln!(self.line, "{}{r:?}", self.prefix);
        }
        // One write per batch keeps lines of parallel subtasks from interleaving mid-line.
        std::io::stdout()
            .lock()
            .write_all(self.line.as_bytes())
            .map_err(|e| Error::io("cannot write to", "standard output", e))
    }
    fn finish(&mut self) -> Result<()> {
        std::io::stdout().lock().flush().map_err(|e| Error::io("cannot write to", "standard output", e))
    }
}
