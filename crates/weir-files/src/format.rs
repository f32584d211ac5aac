//! What goes into a part file: rows encoded one record at a time (Flink's row formats with an
//! `Encoder`), or columns in a Parquet file (a bulk format).

use std::marker::PhantomData;
use std::sync::Arc;

use arrow_schema::FieldRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use weir_core::{Error, Result};

/// A file format: makes the encoder of each new part file.
pub trait Format<T>: Send + Sync + 'static {
    /// Its name, for the sink's name and messages (`text`, `json`, `parquet`).
    fn name(&self) -> String;
    /// Whether the format is a bulk format: a part file is whole only once the format closes it
    /// (Parquet's footer), so that it can only roll, never be cut, at a checkpoint.
    fn is_bulk(&self) -> bool {
        false
    }
    /// The encoder of a new part file.
    fn open(&self) -> Result<Box<dyn PartEncoder<T>>>;
}

/// Encodes the records of one part file into bytes.
pub trait PartEncoder<T>: Send {
    /// Encodes `records`, appending what is ready to `out` (a bulk format may hold some back, as
    /// Parquet holds a row group until it is full).
    fn write(&mut self, records: &[T], out: &mut Vec<u8>) -> Result<()>;
    /// Bytes held back, not yet in `out` (counted toward the part file's size).
    fn buffered(&self) -> u64 {
        0
    }
    /// Ends the file: appends everything held back and any trailer to `out`.
    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Result<()>;
}

/// Appends one record's bytes to a buffer.
type EncodeFn<T> = Arc<dyn Fn(&T, &mut Vec<u8>) -> Result<()> + Send + Sync>;

/// Rows encoded one record at a time by a function (Flink's `Encoder`).
struct RowEncoder<T> {
    encode: EncodeFn<T>,
}

impl<T> PartEncoder<T> for RowEncoder<T> {
    fn write(&mut self, records: &[T], out: &mut Vec<u8>) -> Result<()> {
        for r in records {
            (self.encode)(r, out)?;
        }
        Ok(())
    }
    fn finish(self: Box<Self>, _out: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
}

/// A row format: each record encoded by a function.
pub struct Rows<T> {
    name: String,
    encode: EncodeFn<T>,
}

impl<T> Rows<T> {
    /// Records as their `Display` text, one per line (Flink's `SimpleStringEncoder`).
    pub fn text() -> Self
    where
        T: std::fmt::Display,
    {
        Rows::new("text", |r: &T, out: &mut Vec<u8>| {
            use std::io::Write;
            let _ = writeln!(out, "{r}");
            Ok(())
        })
    }

    /// Records as JSON, one object per line (JSON Lines).
    pub fn json_lines() -> Self
    where
        T: Serialize,
    {
        Rows::new("json", |r: &T, out: &mut Vec<u8>| {
            serde_json::to_writer(&mut *out, r)
                .map_err(|e| Error::Config(format!("a record cannot be written as JSON: {e}")))?;
            out.push(b'\n');
            Ok(())
        })
    }

    /// Records encoded by `encode`, which appends a record's bytes (with any separator) to the
    /// buffer it is given.
    pub fn new(name: &str, encode: impl Fn(&T, &mut Vec<u8>) -> Result<()> + Send + Sync + 'static) -> Self {
        Rows { name: name.to_string(), encode: Arc::new(encode) }
    }
}

impl<T: Send + 'static> Format<T> for Rows<T> {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn open(&self) -> Result<Box<dyn PartEncoder<T>>> {
        Ok(Box::new(RowEncoder { encode: self.encode.clone() }))
    }
}

/// Parquet part files of serde records: each record a row, its fields the columns (schema traced
/// from the type, or given), written with the Arrow project's Parquet writer.
pub struct Parquet<T> {
    fields: Arc<Vec<FieldRef>>,
    props: WriterProperties,
    _records: PhantomData<fn(&T)>,
}

impl<T: Serialize + for<'de> Deserialize<'de>> Parquet<T> {
    /// Parquet with the schema of `T`'s serde shape (structs with numbers, strings, booleans,
    /// options, nested structs and lists), Snappy-compressed.
    pub fn for_type() -> Result<Self> {
        use serde_arrow::schema::{SchemaLike, TracingOptions};
        let fields =
            Vec::<FieldRef>::from_type::<T>(TracingOptions::default().allow_null_fields(true)).map_err(|e| {
                Error::Config(format!(
                    "the Parquet schema of {} cannot be traced from its type: {e}; give it with Parquet::with_schema",
                    std::any::type_name::<T>()
                ))
            })?;
        Ok(Self::with_schema(fields))
    }
}

impl<T> Parquet<T> {
    /// Parquet with the given Arrow fields (each a column, matched to the records' serde fields by
    /// name), Snappy-compressed.
    pub fn with_schema(fields: Vec<FieldRef>) -> Self {
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        Parquet { fields: Arc::new(fields), props, _records: PhantomData }
    }

    /// With the writer's properties (compression, row group size, statistics, ...).
    pub fn properties(mut self, props: WriterProperties) -> Self {
        self.props = props;
        self
    }
}

impl<T: Serialize + Send + 'static> Format<T> for Parquet<T> {
    fn name(&self) -> String {
        "parquet".into()
    }
    fn is_bulk(&self) -> bool {
        true
    }
    fn open(&self) -> Result<Box<dyn PartEncoder<T>>> {
        let schema = Arc::new(arrow_schema::Schema::new(self.fields.as_ref().clone()));
        let writer = ArrowWriter::try_new(Vec::new(), schema, Some(self.props.clone()))
            .map_err(|e| Error::Config(format!("cannot start a Parquet file: {e}")))?;
        Ok(Box::new(ParquetEncoder { fields: self.fields.clone(), writer, _records: PhantomData }))
    }
}

struct ParquetEncoder<T> {
    fields: Arc<Vec<FieldRef>>,
    writer: ArrowWriter<Vec<u8>>,
    _records: PhantomData<fn(&T)>,
}

impl<T: Serialize> PartEncoder<T> for ParquetEncoder<T> {
    fn write(&mut self, records: &[T], out: &mut Vec<u8>) -> Result<()> {
        let batch = serde_arrow::to_record_batch(&self.fields, &records).map_err(|e| {
            Error::Config(format!(
                "records of {} do not fit the Parquet schema: {e}; check the schema given to Parquet::with_schema",
                std::any::type_name::<T>()
            ))
        })?;
        self.writer.write(&batch).map_err(|e| Error::internal(format!("cannot encode a Parquet row group: {e}")))?;
        // The writer tracks its own offsets; what it wrote so far moves on to the part file.
        out.append(self.writer.inner_mut());
        Ok(())
    }
    fn buffered(&self) -> u64 {
        self.writer.in_progress_size() as u64
    }
    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Result<()> {
        let mut rest =
            self.writer.into_inner().map_err(|e| Error::internal(format!("cannot finish a Parquet file: {e}")))?;
        out.append(&mut rest);
        Ok(())
    }
}
