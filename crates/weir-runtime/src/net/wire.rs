//! The wire format of data frames: messages in bitcode, decoded straight into a channel's queue.

use crossbeam_channel::{Sender, TrySendError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_core::{Error, Result};

use crate::output::Message;
use crate::output::{Batch, Timestamp};

/// Decodes one message's payload and queues it; `Ok(true)` once the channel ended.
pub type Decoder = Box<dyn FnMut(&[u8]) -> Result<bool> + Send>;

#[derive(Serialize)]
enum WireOut<'a, T> {
    Records(&'a [T], Option<&'a [Timestamp]>),
    Watermark(Timestamp),
    Idle(bool),
    End,
    Barrier(u64),
}

#[derive(serde::Deserialize)]
enum WireIn<T> {
    Records(Vec<T>, Option<Vec<Timestamp>>),
    Watermark(Timestamp),
    Idle(bool),
    End,
    Barrier(u64),
}

/// Appends the encoding of `m` to `buf`.
pub fn encode_message<T: Serialize>(m: &Message<T>, buf: &mut Vec<u8>) -> Result<()> {
    let wire = match m {
        Message::Records(b) => WireOut::Records(&b.records, b.timestamps.as_deref()),
        Message::Watermark(w) => WireOut::Watermark(*w),
        Message::Idle(i) => WireOut::Idle(*i),
        Message::EndOfInput => WireOut::End,
        Message::Barrier(id) => WireOut::Barrier(*id),
    };
    let bytes = bitcode::serialize(&wire)
        .map_err(|e| Error::internal(format!("cannot serialize a record of {}: {e}", std::any::type_name::<T>())))?;
    buf.extend_from_slice(&bytes);
    Ok(())
}

/// Decodes a message that [`encode_message`] wrote.
pub fn decode_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<Message<T>> {
    let wire: WireIn<T> = bitcode::deserialize(bytes).map_err(|e| {
        Error::external(
            "a peer TaskManager",
            format!(
                "it sent records this process cannot read as {} ({e}); every TaskManager must run the same artifact",
                std::any::type_name::<T>()
            ),
            false,
        )
    })?;
    Ok(match wire {
        WireIn::Records(records, timestamps) => {
            if timestamps.as_ref().is_some_and(|t| t.len() != records.len()) {
                return Err(Error::external(
                    "a peer TaskManager",
                    "it sent a batch whose timestamps do not match its records",
                    false,
                ));
            }
            Message::Records(Batch { records, timestamps })
        }
        WireIn::Watermark(w) => Message::Watermark(w),
        WireIn::Idle(i) => Message::Idle(i),
        WireIn::End => Message::EndOfInput,
        WireIn::Barrier(id) => Message::Barrier(id),
    })
}

/// The decoder of one inbound channel: decodes into `tx`, which has room for every message the
/// sender has credit for.
pub fn decoder<T: DeserializeOwned + Send + 'static>(tx: Sender<Message<T>>) -> Decoder {
    Box::new(move |bytes| {
        let m = decode_message::<T>(bytes)?;
        let end = matches!(m, Message::EndOfInput);
        match tx.try_send(m) {
            Ok(()) => Ok(end),
            // The receiving task is gone (the part is stopping): nothing left to deliver to.
            Err(TrySendError::Disconnected(_)) => Ok(end),
            Err(TrySendError::Full(_)) => Err(Error::external(
                "a peer TaskManager",
                "it sent more messages than it had credit for on a channel",
                false,
            )),
        }
    })
}
