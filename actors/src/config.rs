//! Per-session limits and tuning, shared by listeners, connectors and hand-started sessions.

use std::time::Duration;

use crate::ConfigError;

/// Limits and tuning for a [`Session`](crate::Session). Every limit is on by default.
///
/// Build it with [`Default`] and chained `with_*` setters, read it back with getters of the
/// same names without the prefix; [`validate`](Self::validate) (called by every
/// builder that starts sessions) rejects values that cannot work with a [`ConfigError`].
///
/// | setting | default | when reached |
/// |---|---|---|
/// | write watermarks | high 64 KiB, low 32 KiB | at or above high: writes other than answers are refused with [`SessionError::WriteBufferFull`](crate::SessionError::WriteBufferFull), the handler hears [`write_buffer_full`](crate::SessionHandler::write_buffer_full), registry deliveries wait in the outbound queue; answers written in `ready_read` are taken up to one more high watermark, after which frames (and reading) wait (the handler hears `write_buffer_full` then too, even if a large answer left less than the mark unsent); back at low: all resume. Reading never stops for the write buffer alone |
/// | outbound queue | 64 KiB | bytes the registry (broadcast, send-to-id) may queue for the session beyond its write buffer; at the limit senders wait for room |
/// | slow-consumer timeout | 5 s | a session that takes nothing from its full outbound queue for that long counts as a slow consumer: the broadcast's [`SlowConsumerPolicy`](crate::SlowConsumerPolicy) applies (drop, counted; or disconnect), [`Registry::send_to`](crate::Registry::send_to) fails |
/// | handshake timeout | 10 s | PROXY header and TLS handshake (and the wait for one of the worker's 256 handshake slots) must finish by then, or the connection ends with [`DisconnectReason::HandshakeTimeout`](crate::DisconnectReason::HandshakeTimeout) |
/// | half-close | off | after the peer's FIN and [`read_finished`](crate::SessionHandler::read_finished) the session flushes and closes; on: it stays open for writing until closed |
/// | read chunk | 64 KiB, growing to 256 KiB | bytes asked of the socket per read: a read that fills what it asked for doubles the next one, up to [`largest_read`](Self::largest_read) (256 KiB, never past the read buffer size); one that brings a quarter or less halves it, and a quiet timeout-check period starts it over (with both timeouts off, never). A bulk sender over TCP or a Unix socket is read in half the `recv` calls (over TLS a read takes the plaintext of as many records as the stream has decrypted, so its reads grow too); request-response traffic never leaves the first size. Buffers are allocated at the first byte and given back after a quiet timeout-check period (a quarter of the shortest timeout), so an idle session holds none (with both timeouts off, a session keeps them once used) |
/// | read buffer (notify mode) | 256 KiB | reading stops until the owner takes data (Qt's `setReadBufferSize`), the buffer passes the size by one read at most (reads never grow past it) |
/// | idle timeout | 120 s | no byte moved in either direction for that long: closed with [`DisconnectReason::IdleTimeout`](crate::DisconnectReason::IdleTimeout) |
/// | frame timeout | 60 s | a partial frame waits that long with no complete frame arriving: closed with [`DisconnectReason::FrameTimeout`](crate::DisconnectReason::FrameTimeout) (slowloris) |
/// | close timeout | 10 s | a graceful close that has not flushed and seen the peer's FIN by then is aborted |
/// | frames per turn | 64 | the session yields to its mailbox and other actors after this many frames |
/// | mailbox | 64 messages | `try_send` to the session fails beyond this; `send().await` waits |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use switchboard::SessionConfig;
///
/// let config = SessionConfig::default()
///     .with_write_watermarks(8 * 1024, 32 * 1024)
///     .with_idle_timeout(Some(Duration::from_secs(30)));
/// assert!(config.validate().is_ok());
/// assert_eq!(config.high_watermark(), 32 * 1024);
/// assert_eq!(config.idle_timeout(), Some(Duration::from_secs(30)));
/// ```
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub(crate) low_watermark: usize,
    pub(crate) high_watermark: usize,
    pub(crate) read_chunk: usize,
    pub(crate) max_read_chunk: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) frame_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
    pub(crate) frames_per_turn: usize,
    pub(crate) mailbox_capacity: usize,
    pub(crate) nodelay: bool,
    pub(crate) outbound_queue: usize,
    pub(crate) slow_consumer_timeout: Duration,
    pub(crate) allow_half_close: bool,
    pub(crate) handshake_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            low_watermark: 32 * 1024,
            high_watermark: 64 * 1024,
            read_chunk: 64 * 1024,
            max_read_chunk: 256 * 1024,
            read_buffer_size: 256 * 1024,
            idle_timeout: Some(Duration::from_secs(120)),
            frame_timeout: Some(Duration::from_secs(60)),
            close_timeout: Duration::from_secs(10),
            frames_per_turn: 64,
            mailbox_capacity: 64,
            nodelay: true,
            outbound_queue: 64 * 1024,
            slow_consumer_timeout: Duration::from_secs(5),
            allow_half_close: false,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl SessionConfig {
    /// Sets the write buffer's low and high watermarks in bytes (defaults 32 KiB and 64 KiB).
    pub fn with_write_watermarks(mut self, low: usize, high: usize) -> Self {
        self.low_watermark = low;
        self.high_watermark = high;
        self
    }

    /// Sets how many bytes a session's first read asks of the socket (default 64 KiB). Reads
    /// that fill what they asked for double it, up to [`largest_read`](Self::largest_read) (the
    /// [`with_max_read_chunk`] and the read buffer size, whichever is smaller); a largest read
    /// chunk below this one is raised to it. A small read chunk alone no longer keeps reads
    /// small: set the largest read chunk to the same size for that.
    ///
    /// [`with_max_read_chunk`]: Self::with_max_read_chunk
    pub fn with_read_chunk(mut self, bytes: usize) -> Self {
        self.read_chunk = bytes;
        self.max_read_chunk = self.max_read_chunk.max(bytes);
        self
    }

    /// Sets the most one read may ask of the socket once reads have grown (default 256 KiB);
    /// [`validate`](Self::validate) refuses one below the read chunk. Equal to the read chunk,
    /// every read asks the same. Reads also stay within the
    /// [read buffer size](Self::with_read_buffer_size), and an echo's answer is one read: a
    /// session whose peer stops reading holds up to the high watermark plus one read in its
    /// write buffer.
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard::SessionConfig;
    ///
    /// let fixed = SessionConfig::default().with_max_read_chunk(64 * 1024);
    /// assert_eq!((fixed.read_chunk(), fixed.max_read_chunk()), (64 * 1024, 64 * 1024));
    /// let raised = SessionConfig::default().with_read_chunk(1 << 20);
    /// assert_eq!(raised.max_read_chunk(), 1 << 20);
    /// assert!(SessionConfig::default().with_max_read_chunk(1024).validate().is_err());
    /// ```
    pub fn with_max_read_chunk(mut self, bytes: usize) -> Self {
        self.max_read_chunk = bytes;
        self
    }

    /// Sets the notify-mode read buffer size in bytes (default 256 KiB), Qt's `setReadBufferSize`.
    /// The owner's buffer passes it by one read at most: reads grow while they fill, but never
    /// past this size (nor below the read chunk).
    pub fn with_read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes;
        self
    }

    /// Sets the idle timeout (default 120 s); `None` turns it off.
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the partial-frame timeout (default 60 s); `None` turns it off.
    pub fn with_frame_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.frame_timeout = timeout;
        self
    }

    /// Sets how long a graceful close may take before it becomes an abort (default 10 s).
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets how many frames a session hands its handler before it yields (default 64).
    pub fn with_frames_per_turn(mut self, frames: usize) -> Self {
        self.frames_per_turn = frames;
        self
    }

    /// Sets the session's mailbox capacity (default 64 messages).
    pub fn with_mailbox_capacity(mut self, messages: usize) -> Self {
        self.mailbox_capacity = messages;
        self
    }

    /// Sets `TCP_NODELAY` on the socket (default on: small replies leave at once).
    pub fn with_nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// Sets how many bytes the registry may queue for a session beyond its write buffer
    /// (default 64 KiB; each message is charged 32 bytes more, so empty messages are bounded
    /// too). At the limit, broadcasts and sends wait for the session to take bytes.
    pub fn with_outbound_queue(mut self, bytes: usize) -> Self {
        self.outbound_queue = bytes;
        self
    }

    /// Sets how long a session may take nothing from its full outbound queue before it counts
    /// as a slow consumer (default 5 s). One client that stopped reading holds up a
    /// broadcasting sender for at most this long.
    pub fn with_slow_consumer_timeout(mut self, timeout: Duration) -> Self {
        self.slow_consumer_timeout = timeout;
        self
    }

    /// Keeps the session open for writing after the peer's FIN (default off: after
    /// [`read_finished`](crate::SessionHandler::read_finished) the session flushes, shuts its
    /// write side and ends). With it on, the handler or owner ends the session
    /// ([`ShutdownWrite`](crate::ShutdownWrite), [`DisconnectFromHost`](crate::DisconnectFromHost))
    /// or the idle timeout does. Netty's `ALLOW_HALF_CLOSURE`.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = switchboard::SessionConfig::default().with_allow_half_close(true);
    /// assert!(config.allow_half_close());
    /// ```
    pub fn with_allow_half_close(mut self, on: bool) -> Self {
        self.allow_half_close = on;
        self
    }

    /// The write buffer's low and high watermarks in bytes, as set by
    /// [`with_write_watermarks`](Self::with_write_watermarks).
    pub fn write_watermarks(&self) -> (usize, usize) {
        (self.low_watermark, self.high_watermark)
    }

    /// The high watermark in bytes.
    pub fn high_watermark(&self) -> usize {
        self.high_watermark
    }

    /// The low watermark in bytes.
    pub fn low_watermark(&self) -> usize {
        self.low_watermark
    }

    /// Bytes a session's first read asks of the socket.
    pub fn read_chunk(&self) -> usize {
        self.read_chunk
    }

    /// The largest read chunk as set; reads are capped at [`largest_read`](Self::largest_read),
    /// which also respects the read buffer size.
    pub fn max_read_chunk(&self) -> usize {
        self.max_read_chunk
    }

    /// The most one read asks of the socket once reads have grown: the largest read chunk, but
    /// no more than the read buffer size (so a notify-mode owner's limit is passed by one read
    /// at most), and never less than the read chunk.
    ///
    /// # Examples
    ///
    /// ```
    /// use switchboard::SessionConfig;
    ///
    /// assert_eq!(SessionConfig::default().largest_read(), 256 * 1024);
    /// let notify = SessionConfig::default().with_read_buffer_size(128 * 1024);
    /// assert_eq!(notify.largest_read(), 128 * 1024);
    /// // Never below the first read's 64 KiB.
    /// let small_buffer = notify.with_read_buffer_size(16 * 1024);
    /// assert_eq!(small_buffer.largest_read(), 64 * 1024);
    /// ```
    pub fn largest_read(&self) -> usize {
        self.max_read_chunk
            .min(self.read_buffer_size)
            .max(self.read_chunk)
    }

    /// What a read asks of the socket after `doublings` reads in a row filled theirs.
    pub(crate) fn read_size(&self, doublings: u8) -> usize {
        if u32::from(doublings) >= self.read_chunk.leading_zeros() {
            // The doubled size is at least 2^63 or does not fit: treated as past the cap.
            return self.largest_read();
        }
        (self.read_chunk << doublings).min(self.largest_read())
    }

    /// The notify-mode read buffer size in bytes.
    pub fn read_buffer_size(&self) -> usize {
        self.read_buffer_size
    }

    /// The idle timeout, if on.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// The partial-frame timeout, if on.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use switchboard::SessionConfig;
    ///
    /// assert_eq!(SessionConfig::default().frame_timeout(), Some(Duration::from_secs(60)));
    /// assert_eq!(SessionConfig::default().with_frame_timeout(None).frame_timeout(), None);
    /// ```
    pub fn frame_timeout(&self) -> Option<Duration> {
        self.frame_timeout
    }

    /// How long a graceful close may take before it becomes an abort.
    pub fn close_timeout(&self) -> Duration {
        self.close_timeout
    }

    /// Frames a session hands its handler before it yields.
    pub fn frames_per_turn(&self) -> usize {
        self.frames_per_turn
    }

    /// The session's mailbox capacity in messages.
    pub fn mailbox_capacity(&self) -> usize {
        self.mailbox_capacity
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> bool {
        self.nodelay
    }

    /// The outbound queue's limit in bytes.
    pub fn outbound_queue(&self) -> usize {
        self.outbound_queue
    }

    /// The slow-consumer timeout.
    pub fn slow_consumer_timeout(&self) -> Duration {
        self.slow_consumer_timeout
    }

    /// Sets how long the handshakes before a session starts (PROXY header, TLS) may take
    /// together, waiting for one of the worker's handshake slots included (default 10 s).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long the handshakes before a session starts may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Whether the session stays open for writing after the peer's FIN.
    pub fn allow_half_close(&self) -> bool {
        self.allow_half_close
    }

    /// Checks that the settings can work together.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first offending option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.high_watermark == 0 {
            return Err(ConfigError::invalid(
                "write_watermarks",
                "the high watermark must be above 0",
            ));
        }
        if self.low_watermark > self.high_watermark {
            return Err(ConfigError::invalid(
                "write_watermarks",
                format!(
                    "the low watermark ({}) is above the high watermark ({})",
                    self.low_watermark, self.high_watermark
                ),
            ));
        }
        if self.read_chunk == 0 {
            return Err(ConfigError::invalid(
                "read_chunk",
                "must be at least 1 byte",
            ));
        }
        if self.max_read_chunk < self.read_chunk {
            return Err(ConfigError::invalid(
                "max_read_chunk",
                format!(
                    "the largest read chunk ({}) is below the read chunk ({})",
                    self.max_read_chunk, self.read_chunk
                ),
            ));
        }
        if self.read_buffer_size == 0 {
            return Err(ConfigError::invalid(
                "read_buffer_size",
                "must be at least 1 byte",
            ));
        }
        if self.frames_per_turn == 0 {
            return Err(ConfigError::invalid(
                "frames_per_turn",
                "must be at least 1",
            ));
        }
        if self.close_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "close_timeout",
                "must be above zero, or every graceful close becomes an abort",
            ));
        }
        if self.outbound_queue == 0 {
            return Err(ConfigError::invalid(
                "outbound_queue",
                "must be at least 1 byte",
            ));
        }
        if self.slow_consumer_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "slow_consumer_timeout",
                "must be above zero, or every full queue is a slow consumer",
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "handshake_timeout",
                "must be above zero",
            ));
        }
        if self.mailbox_capacity == 0 {
            return Err(ConfigError::invalid(
                "mailbox_capacity",
                "must be at least 1",
            ));
        }
        for (option, timeout) in [
            ("idle_timeout", self.idle_timeout),
            ("frame_timeout", self.frame_timeout),
        ] {
            if timeout == Some(Duration::ZERO) {
                return Err(ConfigError::invalid(
                    option,
                    "use None to turn it off, not zero",
                ));
            }
        }
        Ok(())
    }

    /// The period of the session's timeout check: a quarter of the shortest timeout, so a
    /// timeout fires at most 25% late, with no clock read on the data path.
    pub(crate) fn tick(&self) -> Option<Duration> {
        let shortest = match (self.idle_timeout, self.frame_timeout) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        Some((shortest / 4).max(Duration::from_millis(5)))
    }
}

#[cfg(test)]
mod tests {
    use super::SessionConfig;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn reads_double_up_to_the_largest_read_and_no_further() {
        let config = SessionConfig::default();
        let sizes: Vec<usize> = (0..5).map(|d| config.read_size(d) / 1024).collect();
        assert_eq!(sizes, [64, 128, 256, 256, 256]);
        // Doublings that would overflow a usize give the cap, not a wrapped size.
        assert_eq!(config.read_size(u8::MAX), 256 * 1024);
        let unbounded = SessionConfig::default()
            .with_read_chunk(3)
            .with_max_read_chunk(usize::MAX)
            .with_read_buffer_size(usize::MAX);
        assert_eq!(unbounded.read_size(61), 3 << 61);
        assert_eq!(unbounded.read_size(62), usize::MAX);
    }

    #[test]
    fn the_largest_read_stays_within_the_read_buffer_but_not_below_the_chunk() {
        let fixed = SessionConfig::default().with_max_read_chunk(64 * 1024);
        assert_eq!(
            (fixed.read_size(0), fixed.read_size(3)),
            (64 * 1024, 64 * 1024)
        );
        let small_buffer = SessionConfig::default().with_read_buffer_size(100 * 1024);
        assert_eq!(small_buffer.read_size(1), 100 * 1024);
        let tiny_buffer = SessionConfig::default().with_read_buffer_size(1024);
        assert_eq!(tiny_buffer.read_size(0), 64 * 1024);
        assert_eq!(tiny_buffer.read_size(2), 64 * 1024);
        let raised = SessionConfig::default().with_read_chunk(1 << 20);
        assert_eq!(
            (raised.max_read_chunk(), raised.largest_read()),
            (1 << 20, 1 << 20)
        );
        let below = SessionConfig::default().with_max_read_chunk(1024);
        let error = below.validate().unwrap_err().to_string();
        assert!(error.contains("max_read_chunk"), "{error}");
    }
}
