//! The gRPC service's answer as a Connect answer.
//!
//! Unary: the one message as the body (`application/json` or
//! `application/proto`), or on failure the HTTP status of the code and
//! the Connect error JSON; response metadata (`x-ratelimit-*`) as headers,
//! trailing metadata as `trailer-<name>` headers. Streaming: HTTP 200,
//! envelopes, then the end-of-stream envelope ([`ConnectStreamBody`]).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use tonic::{Code, Status, body::Body};

use super::{
    codec::{FLAG_END_STREAM, frame, proto_to_json, single_frame},
    error::{end_stream_json, error_json, http_status, is_protocol_header},
    request::{Call, Encoding, Shape},
    stream::ConnectStreamBody,
};

/// The content type of a Connect answer of `shape`.
fn content_type(shape: Shape) -> HeaderValue {
    HeaderValue::from_static(match (shape.streaming, shape.encoding) {
        (false, Encoding::Json) => "application/json",
        (false, Encoding::Proto) => "application/proto",
        (true, Encoding::Json) => "application/connect+json",
        (true, Encoding::Proto) => "application/connect+proto",
    })
}

/// `headers` without the gRPC framing's own.
fn caller_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if !is_protocol_header(name.as_str()) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The Connect error answer for `status` (unary: HTTP status + JSON;
/// streaming: HTTP 200 and an end-of-stream envelope), with `headers`.
pub fn error(shape: Shape, status: &Status, mut headers: HeaderMap) -> Response<Body> {
    if shape.streaming {
        headers.insert(header::CONTENT_TYPE, content_type(shape));
        let end = frame(FLAG_END_STREAM, &end_stream_json(status, &HeaderMap::new()));
        let body = Body::new(Full::new(end.unwrap_or_default()));
        return respond(StatusCode::OK, headers, body);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let json = serde_json::to_vec(&error_json(status)).unwrap_or_default();
    respond(
        http_status(status.code()),
        headers,
        Body::new(Full::new(Bytes::from(json))),
    )
}

/// A plain HTTP refusal (an unsupported content type).
pub fn refusal(status: StatusCode) -> Response<Body> {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("accept-post"),
        HeaderValue::from_static(
            "application/json, application/proto, application/connect+json, application/connect+proto",
        ),
    );
    respond(status, headers, Body::empty())
}

/// The Connect answer to `call` for the gRPC service's `response`.
pub async fn translate<B>(call: &Call, response: Response<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<super::BoxError>,
{
    let (parts, body) = response.into_parts();
    // A trailers-only answer carries its status in the headers.
    let head = Status::from_header_map(&parts.headers);
    let mut headers = caller_headers(&parts.headers);
    let shape = call.shape;
    if shape.streaming {
        headers.insert(header::CONTENT_TYPE, content_type(shape));
        let json = match shape.encoding {
            Encoding::Json => call.method.map(|method| method.output.clone()),
            Encoding::Proto => None,
        };
        let body = Body::new(ConnectStreamBody::new(body, json, head));
        return respond(StatusCode::OK, headers, body);
    }
    if let Some(status) = head.as_ref().filter(|status| status.code() != Code::Ok) {
        return error(shape, status, headers);
    }
    let (bytes, trailers) = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned().unwrap_or_default();
            (collected.to_bytes(), trailers)
        }
        Err(err) => {
            return error(shape, &Status::from_error(err.into()), headers);
        }
    };
    let status = head
        .or_else(|| Status::from_header_map(&trailers))
        .unwrap_or_else(|| Status::internal("the answer ended without a status"));
    for (name, value) in caller_headers(&trailers).iter() {
        if let Ok(name) = HeaderName::from_bytes(format!("trailer-{name}").as_bytes()) {
            headers.append(name, value.clone());
        }
    }
    if status.code() != Code::Ok {
        return error(shape, &status, headers);
    }
    let message = match single_frame(&bytes) {
        Some((0, message)) => message,
        _ => {
            let status = Status::internal("the answer was not one uncompressed message");
            return error(shape, &status, headers);
        }
    };
    let body = match shape.encoding {
        Encoding::Proto => message,
        Encoding::Json => match call
            .method
            .ok_or_else(|| "no such method".to_owned())
            .and_then(|method| proto_to_json(&method.output, &message))
        {
            Ok(json) => Bytes::from(json),
            Err(problem) => {
                tracing::warn!(%problem, "Connect: an answer could not be encoded as JSON");
                let status = Status::internal("the answer could not be encoded");
                return error(shape, &status, headers);
            }
        },
    };
    headers.insert(header::CONTENT_TYPE, content_type(shape));
    respond(StatusCode::OK, headers, Body::new(Full::new(body)))
}
