//! A Connect request recognised and turned into the gRPC request the
//! routes serve: the body read within `server.max_request_bytes`, the
//! message transcoded to protobuf and framed, `connect-timeout-ms` as
//! `grpc-timeout`, every other header (authorization, caller metadata)
//! kept.

use bytes::Bytes;
use flowgate_core::{ErrorClass, GatewayError};
use http::{HeaderMap, HeaderValue, Method as HttpMethod, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use tonic::Status;

use super::codec::{
    Catalog, FLAG_COMPRESSED, FLAG_END_STREAM, Method, frame, json_to_frame, single_frame,
};
use crate::layers::malformed::MALFORMED_REQUEST;

/// How a Connect call's messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Proto3 JSON.
    Json,
    /// Protobuf binary.
    Proto,
}

/// What a Connect request's content type says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// How its messages are encoded.
    pub encoding: Encoding,
    /// True for the streaming content types (`application/connect+…`).
    pub streaming: bool,
}

/// A recognised Connect call.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method called, when the catalog knows it (always for JSON).
    /// Binary calls of other methods (reflection's bidirectional stream)
    /// pass their protobuf through: a Connect envelope is a gRPC frame.
    pub method: Option<&'static Method>,
    /// Its encoding and kind.
    pub shape: Shape,
}

/// Why a Connect-looking request is answered without calling the service.
#[derive(Debug)]
pub enum Refusal {
    /// A plain HTTP status (wrong content type for the method).
    Http(StatusCode),
    /// A Connect error.
    Status(Shape, Status),
}

/// The Connect call `request` makes: `None` when it is not one (gRPC,
/// gRPC-Web or anything else passes on untouched), `Some(Err)` when it is
/// one that cannot be served.
pub fn recognise<B>(request: &Request<B>) -> Option<Result<Call, Refusal>> {
    if request.method() != HttpMethod::POST {
        return None;
    }
    let content_type = request.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    // Compared without allocating: every gRPC call passes here too.
    let (encoding, streaming) = [
        ("application/json", Encoding::Json, false),
        ("application/proto", Encoding::Proto, false),
        ("application/connect+json", Encoding::Json, true),
        ("application/connect+proto", Encoding::Proto, true),
    ]
    .into_iter()
    .find(|(name, _, _)| essence.eq_ignore_ascii_case(name))
    .map(|(_, encoding, streaming)| (encoding, streaming))?;
    let shape = Shape {
        encoding,
        streaming,
    };
    let Some(catalog) = Catalog::get() else {
        let status = Status::internal("the Connect protocol is unavailable");
        return Some(Err(Refusal::Status(shape, status)));
    };
    let method = catalog.method(request.uri().path());
    match method {
        Some(method) if method.server_streaming != streaming => {
            Some(Err(Refusal::Http(StatusCode::UNSUPPORTED_MEDIA_TYPE)))
        }
        None if encoding == Encoding::Json => {
            let status = Status::unimplemented("no such method for JSON");
            Some(Err(Refusal::Status(shape, status)))
        }
        _ => Some(Ok(Call { method, shape })),
    }
}

/// A malformed request: INVALID_ARGUMENT, reason `MALFORMED_REQUEST`.
pub fn malformed(message: impl std::fmt::Display) -> Status {
    let message =
        crate::status::cap(&message.to_string(), crate::status::MAX_MESSAGE_CHARS).into_owned();
    crate::status::to_status(&GatewayError::new(
        ErrorClass::InvalidArgument,
        MALFORMED_REQUEST,
        format!("malformed request: {message}"),
    ))
}

fn too_large(max: usize) -> Status {
    malformed(format!(
        "request body larger than server.max_request_bytes ({max})"
    ))
}

/// A streaming request's one message sits behind its 5-byte prefix.
fn body_limit(call: &Call, max: usize) -> usize {
    max.saturating_add(if call.shape.streaming { 5 } else { 0 })
}

/// What the headers alone refuse: a compressed body, or one whose
/// declared length is over `max`; answered before anything is read.
pub fn check_headers(call: &Call, headers: &HeaderMap, max: usize) -> Result<(), Status> {
    let encoding_header = if call.shape.streaming {
        "connect-content-encoding"
    } else {
        "content-encoding"
    };
    if let Some(encoding) = headers.get(encoding_header)
        && encoding.as_bytes() != b"identity"
    {
        return Err(malformed(
            "compressed requests are not supported; send them uncompressed",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let limit = u64::try_from(body_limit(call, max)).unwrap_or(u64::MAX);
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(max));
    }
    Ok(())
}

/// The request body read within `max` bytes and turned into one framed
/// protobuf message for the gRPC service. Run when the gRPC service reads
/// its request, so after authentication and load shedding: a stranger's
/// body is never buffered.
pub async fn grpc_body<B>(call: &Call, body: B, max: usize) -> Result<Bytes, Status>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<super::BoxError>,
{
    let too_large = || too_large(max);
    let limit = body_limit(call, max);
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(_) => return Err(Status::cancelled("the request body could not be read")),
    };
    let message = if call.shape.streaming {
        match single_frame(&bytes) {
            Some((0, message)) if message.len() <= max => message,
            Some((0, _)) => return Err(too_large()),
            Some((flags, _)) if flags & FLAG_COMPRESSED != 0 => {
                return Err(malformed("compressed envelope without an encoding"));
            }
            Some((flags, _)) if flags & FLAG_END_STREAM != 0 => {
                return Err(malformed("end-of-stream envelope in a request"));
            }
            Some(_) => return Err(malformed("unknown envelope flags")),
            None => return Err(malformed("expected exactly one whole envelope")),
        }
    } else {
        bytes
    };
    match call.shape.encoding {
        Encoding::Proto => frame(0, &message).ok_or_else(too_large),
        Encoding::Json => match call.method {
            Some(method) => json_to_frame(&method.input, &message).map_err(malformed),
            None => Err(Status::unimplemented("no such method for JSON")),
        },
    }
}

/// The gRPC request headers for a Connect request's `headers`: the
/// caller's own kept, the protocol's replaced.
pub fn grpc_headers(headers: &mut HeaderMap) -> Result<(), Status> {
    let timeout = match headers.get("connect-timeout-ms") {
        None => None,
        Some(value) => Some(grpc_timeout(value).ok_or_else(|| {
            malformed("connect-timeout-ms must be a positive integer of at most 10 digits")
        })?),
    };
    let names: Vec<_> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.starts_with("connect-")
                || name.starts_with("grpc-")
                || matches!(
                    name,
                    "content-type"
                        | "content-length"
                        | "content-encoding"
                        | "accept-encoding"
                        | "te"
                )
        })
        .cloned()
        .collect();
    for name in names {
        headers.remove(&name);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(timeout) = timeout {
        headers.insert("grpc-timeout", timeout);
    }
    Ok(())
}

/// `connect-timeout-ms` (at most 10 digits) as a `grpc-timeout` value
/// (at most 8 digits: milliseconds, or whole seconds past that).
fn grpc_timeout(value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis: u64 = text.parse().ok()?;
    let value = if millis <= 99_999_999 {
        format!("{millis}m")
    } else {
        format!("{}S", millis.div_ceil(1000))
    };
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_convert() {
        let convert = |text: &str| grpc_timeout(&HeaderValue::from_str(text).unwrap());
        assert_eq!(convert("1500").unwrap(), "1500m");
        assert_eq!(convert("9999999999").unwrap(), "10000000S");
        assert!(convert("").is_none());
        assert!(convert("-5").is_none());
        assert!(convert("12345678901").is_none());
        assert!(convert("1e3").is_none());
    }

    #[test]
    fn headers_become_grpc_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("connect-protocol-version", "1".parse().unwrap());
        headers.insert("connect-timeout-ms", "250".parse().unwrap());
        headers.insert("authorization", "Bearer k".parse().unwrap());
        headers.insert("grpc-timeout", "99H".parse().unwrap());
        grpc_headers(&mut headers).unwrap();
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["grpc-timeout"], "250m");
        assert_eq!(headers["authorization"], "Bearer k");
        assert!(headers.get("connect-protocol-version").is_none());
    }

    #[test]
    fn only_connect_content_types_are_recognised() {
        let request = |method: &str, path: &str, content_type: &str| {
            Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", content_type)
                .body(())
                .unwrap()
        };
        let invoke = "/flowgate.v1.WorkflowGateway/Invoke";
        let stream = "/flowgate.v1.WorkflowGateway/StreamStatus";
        assert!(recognise(&request("POST", invoke, "application/grpc")).is_none());
        assert!(matches!(
            recognise(&request("POST", invoke, "Application/JSON")),
            Some(Ok(_))
        ));
        assert!(recognise(&request("POST", invoke, "application/grpc-web+proto")).is_none());
        assert!(recognise(&request("GET", invoke, "application/json")).is_none());
        assert!(matches!(
            recognise(&request("POST", invoke, "application/json; charset=utf-8")),
            Some(Ok(Call {
                shape: Shape {
                    encoding: Encoding::Json,
                    streaming: false
                },
                ..
            }))
        ));
        assert!(matches!(
            recognise(&request("POST", stream, "application/connect+proto")),
            Some(Ok(Call {
                shape: Shape {
                    encoding: Encoding::Proto,
                    streaming: true
                },
                ..
            }))
        ));
        assert!(matches!(
            recognise(&request("POST", stream, "application/json")),
            Some(Err(Refusal::Http(StatusCode::UNSUPPORTED_MEDIA_TYPE)))
        ));
        assert!(matches!(
            recognise(&request(
                "POST",
                "/flowgate.v1.WorkflowGateway/Nope",
                "application/json"
            )),
            Some(Err(Refusal::Status(_, _)))
        ));
    }
}
