//! The control socket's protocol: what `appliancectl` (or any script) may ask the
//! daemon, and the shape of every answer. The daemon (`appliance::control`) and the CLI
//! both use these types, so a field renamed on one side is a compile error on the
//! other, not a silently empty column.
//!
//! What it owns: [`Request`] with its parser ([`Request::parse`], which returns errors
//! and never panics on any input; a fuzz target runs it), the reply types in
//! [`reply`], and the framing: one request line per connection, answered by one line of
//! JSON ([`decode_reply`]). What it must not do: know the daemon's internals (no
//! atomics, no `Arc`s): replies are plain data.
//!
//! ## Request lines
//! A request is one line of JSON, as [`Request::to_line`] writes it
//! (`{"cmd":"backend","action":"drain","address":"10.0.0.2:80"}`), or, for people at a
//! socket with `socat`, the words form: `ping`, `status`, `stats`, `vservers`,
//! `backends`, `certs`, `sessions`, `reload`, `session-store`, `flush session-store`,
//! `vserver enable|disable NAME`, `backend drain|enable ADDRESS [VSERVER]`.
//!
//! ## Replies
//! Every reply is one JSON object or array; a refusal is `{"error": "..."}` naming what
//! was wrong ([`reply::Refusal`]).

pub mod reply;

use serde::{Deserialize, Serialize};

pub use reply::Refusal;

/// Longest request line the daemon reads.
pub const MAX_LINE: usize = 4096;

/// The longest vserver name or backend address a request carries, so that its JSON
/// form (quotes and backslashes doubled) always fits in [`MAX_LINE`].
pub const MAX_FIELD: usize = 255;

/// What a backend switch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendAction {
    /// No new connections; open ones carry on.
    Drain,
    /// Take new connections again.
    Enable,
}

/// What a vserver switch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VserverAction {
    /// Take new connections.
    Enable,
    /// Reset new connections; open ones carry on.
    Disable,
}

/// One request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Answers [`reply::Ack`].
    Ping,
    /// Answers [`reply::Status`].
    Status,
    /// Every counter: answers [`reply::Stats`].
    Stats,
    /// Answers a list of [`reply::VserverSnap`].
    Vservers,
    /// Answers a list of [`reply::BackendRow`].
    Backends,
    /// Answers a list of [`reply::CertInfo`].
    Certs,
    /// Answers [`reply::Sessions`].
    Sessions,
    /// Reads the configuration file again: answers [`reply::ReloadSummary`].
    Reload,
    /// The TLS session store and cluster: answers [`reply::SessionStore`].
    SessionStore,
    /// Drops every TLS session on every node: answers [`reply::Flushed`].
    FlushSessionStore,
    /// Answers [`reply::VserverSwitched`].
    Vserver { action: VserverAction, name: String },
    /// In every vserver that has the backend, or only in `vserver`: answers
    /// [`reply::BackendSwitched`].
    Backend {
        action: BackendAction,
        address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vserver: Option<String>,
    },
}

/// Why a request line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty request; commands: {COMMANDS}")]
    Empty,
    #[error("request longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("not a request: {0}")]
    BadJson(String),
    #[error("unknown command {0:?}; commands: {COMMANDS}")]
    Unknown(String),
    /// A name or address that no vserver or backend can have.
    #[error("{0}: at most {MAX_FIELD} bytes, no control characters")]
    BadField(&'static str),
    #[error("{0}")]
    Usage(&'static str),
}

/// The words form's commands, for error messages.
pub const COMMANDS: &str = "ping, status, stats, vservers, backends, certs, vserver enable|disable NAME, backend drain|enable ADDRESS [VSERVER], sessions, reload, session-store, flush session-store";

impl Request {
    /// Parses one request line: JSON, or the words form (see the crate docs).
    pub fn parse(line: &str) -> Result<Request, ParseError> {
        if line.len() > MAX_LINE {
            return Err(ParseError::TooLong);
        }
        let line = line.trim();
        let req = if line.starts_with('{') {
            serde_json::from_str(line).map_err(|e| ParseError::BadJson(e.to_string()))?
        } else {
            Self::parse_words(line)?
        };
        req.check_fields()?;
        Ok(req)
    }

    /// Names and addresses are short and printable in either form (a fuzzer found a
    /// words-form line whose JSON form, control characters escaped, outgrew the line
    /// limit).
    fn check_fields(&self) -> Result<(), ParseError> {
        let ok = |s: &str| s.len() <= MAX_FIELD && !s.chars().any(char::is_control);
        match self {
            Request::Vserver { name, .. } if !ok(name) => Err(ParseError::BadField("vserver name")),
            Request::Backend { address, .. } if !ok(address) => {
                Err(ParseError::BadField("backend address"))
            }
            Request::Backend {
                vserver: Some(v), ..
            } if !ok(v) => Err(ParseError::BadField("vserver name")),
            _ => Ok(()),
        }
    }

    fn parse_words(line: &str) -> Result<Request, ParseError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Ok(match words.as_slice() {
            [] => return Err(ParseError::Empty),
            ["ping"] => Request::Ping,
            ["status"] => Request::Status,
            ["stats"] => Request::Stats,
            ["vservers"] => Request::Vservers,
            ["backends"] => Request::Backends,
            ["certs"] => Request::Certs,
            ["sessions"] => Request::Sessions,
            ["reload"] => Request::Reload,
            ["session-store"] | ["session_store"] => Request::SessionStore,
            ["flush", "session-store"] | ["flush_session_store"] => Request::FlushSessionStore,
            ["vserver", action, name] => Request::Vserver {
                action: match *action {
                    "enable" => VserverAction::Enable,
                    "disable" => VserverAction::Disable,
                    _ => return Err(ParseError::Usage("vserver enable|disable NAME")),
                },
                name: name.to_string(),
            },
            ["vserver", ..] => return Err(ParseError::Usage("vserver enable|disable NAME")),
            ["backend", action, address, rest @ ..] if rest.len() <= 1 => Request::Backend {
                action: match *action {
                    "drain" => BackendAction::Drain,
                    "enable" => BackendAction::Enable,
                    _ => return Err(ParseError::Usage("backend drain|enable ADDRESS [VSERVER]")),
                },
                address: address.to_string(),
                vserver: rest.first().map(|v| v.to_string()),
            },
            ["backend", ..] => {
                return Err(ParseError::Usage("backend drain|enable ADDRESS [VSERVER]"))
            }
            _ => return Err(ParseError::Unknown(line.chars().take(80).collect())),
        })
    }

    /// The request as the line a client sends (JSON, no newline).
    pub fn to_line(&self) -> String {
        // Plain enums and strings: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a reply could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The daemon refused the request (its words).
    #[error("{0}")]
    Refused(String),
    /// The reply is not what the request answers (a daemon of another version?).
    #[error("unexpected reply from the appliance ({0})")]
    Malformed(String),
}

/// Reads a reply line as `T`; a refusal (`{"error": ...}`) is [`ReplyError::Refused`].
pub fn decode_reply<T: serde::de::DeserializeOwned>(line: &str) -> Result<T, ReplyError> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| ReplyError::Malformed(e.to_string()))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(ReplyError::Refused(e.to_string()));
    }
    serde_json::from_value(v).map_err(|e| ReplyError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_short_and_printable() {
        // The fuzzer's line (fuzz/artifacts/control_request-crash-430c4cd8…): a
        // words-form address full of control characters, whose JSON form (each one a
        // six-byte \u escape) was longer than a request may be.
        let crash = include_bytes!("../../fuzz/corpus/control_request/regress-control-chars");
        let line = std::str::from_utf8(crash).unwrap();
        assert_eq!(
            Request::parse(line),
            Err(ParseError::BadField("backend address"))
        );
        let long = format!("vserver enable {}", "a".repeat(MAX_FIELD + 1));
        assert_eq!(
            Request::parse(&long),
            Err(ParseError::BadField("vserver name"))
        );
        let json =
            r#"{"cmd":"backend","action":"drain","address":"10.0.0.2:80","vserver":"a\u0000b"}"#;
        assert_eq!(
            Request::parse(json),
            Err(ParseError::BadField("vserver name"))
        );
        // The longest fields, all quotes, still make a line the parser takes back.
        let q = "\"".repeat(MAX_FIELD);
        let req = Request::Backend {
            action: BackendAction::Drain,
            address: q.clone(),
            vserver: Some(q),
        };
        assert_eq!(Request::parse(&req.to_line()), Ok(req));
    }

    #[test]
    fn words_and_json_forms_parse_to_the_same_request() {
        let cases: &[(&str, Request)] = &[
            ("ping", Request::Ping),
            ("  stats \n", Request::Stats),
            ("session-store", Request::SessionStore),
            ("flush session-store", Request::FlushSessionStore),
            (
                "vserver disable web",
                Request::Vserver {
                    action: VserverAction::Disable,
                    name: "web".into(),
                },
            ),
            (
                "backend drain 10.0.0.2:80",
                Request::Backend {
                    action: BackendAction::Drain,
                    address: "10.0.0.2:80".into(),
                    vserver: None,
                },
            ),
            (
                "backend enable 10.0.0.2:80 web",
                Request::Backend {
                    action: BackendAction::Enable,
                    address: "10.0.0.2:80".into(),
                    vserver: Some("web".into()),
                },
            ),
        ];
        for (line, want) in cases {
            let got = Request::parse(line).unwrap();
            assert_eq!(&got, want, "{line}");
            assert_eq!(
                &Request::parse(&got.to_line()).unwrap(),
                want,
                "{line} as JSON"
            );
        }
        assert_eq!(
            Request::parse(r#"{"cmd":"backend","action":"drain","address":"a:1"}"#).unwrap(),
            Request::Backend {
                action: BackendAction::Drain,
                address: "a:1".into(),
                vserver: None
            }
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        assert_eq!(Request::parse(""), Err(ParseError::Empty));
        assert_eq!(
            Request::parse(&"x".repeat(MAX_LINE + 1)),
            Err(ParseError::TooLong)
        );
        assert!(matches!(
            Request::parse("frobnicate"),
            Err(ParseError::Unknown(_))
        ));
        assert!(matches!(
            Request::parse("vserver toggle web"),
            Err(ParseError::Usage(_))
        ));
        assert!(matches!(
            Request::parse("backend drain"),
            Err(ParseError::Usage(_))
        ));
        assert!(matches!(
            Request::parse("backend drain a b c"),
            Err(ParseError::Usage(_))
        ));
        assert!(matches!(
            Request::parse(r#"{"cmd":"nope"}"#),
            Err(ParseError::BadJson(_))
        ));
        assert!(matches!(
            Request::parse(r#"{"cmd":"vserver","action":"enable","name":"w","extra":1}"#),
            Err(ParseError::BadJson(_))
        ));
        assert!(matches!(Request::parse("{"), Err(ParseError::BadJson(_))));
        assert!(Request::parse("vserver enable web").is_ok());
    }

    #[test]
    fn refusals_and_malformed_replies_are_told_apart() {
        let r: Result<reply::Ack, _> = decode_reply(r#"{"error":"no vserver named \"x\""}"#);
        assert!(matches!(r, Err(ReplyError::Refused(e)) if e.contains("no vserver")));
        let r: Result<reply::Ack, _> = decode_reply(r#"{"pong":1}"#);
        assert!(matches!(r, Err(ReplyError::Malformed(_))));
        let r: Result<reply::Ack, _> = decode_reply("not json");
        assert!(matches!(r, Err(ReplyError::Malformed(_))));
        let r: reply::Ack = decode_reply(r#"{"ok":true}"#).unwrap();
        assert!(r.ok);
    }
}
