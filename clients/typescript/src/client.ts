// A typed WorkflowGateway client over gRPC or the Connect protocol (JSON or
// binary), with the caller's API key sent on every call.
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";

import { WorkflowGateway } from "./gen/flowgate/v1/gateway_pb.js";

/** How the client talks to the gateway; all three reach the same service. */
export type Protocol = "grpc" | "connect-json" | "connect-binary";

export interface FlowgateOptions {
  /** The gateway's address, e.g. `http://127.0.0.1:50051`. */
  baseUrl: string;
  /** `grpc` (HTTP/2), or the Connect protocol over HTTP/1.1. Default `grpc`. */
  protocol?: Protocol;
  /** A caller API key (`[callers]`), sent as `authorization: Bearer <key>`. */
  apiKey?: string;
}

export type FlowgateClient = Client<typeof WorkflowGateway>;

/** A transport for `options`, for clients of other services too. */
export function flowgateTransport(options: FlowgateOptions): Transport {
  const interceptors: Interceptor[] = [];
  const { apiKey } = options;
  if (apiKey !== undefined) {
    interceptors.push((next) => async (request) => {
      request.header.set("authorization", `Bearer ${apiKey}`);
      return next(request);
    });
  }
  switch (options.protocol ?? "grpc") {
    case "grpc":
      return createGrpcTransport({ baseUrl: options.baseUrl, interceptors });
    case "connect-json":
      return createConnectTransport({ baseUrl: options.baseUrl, httpVersion: "1.1", interceptors });
    case "connect-binary":
      return createConnectTransport({
        baseUrl: options.baseUrl,
        httpVersion: "1.1",
        useBinaryFormat: true,
        interceptors,
      });
  }
}

/** A WorkflowGateway client. */
export function flowgateClient(options: FlowgateOptions): FlowgateClient {
  return createClient(WorkflowGateway, flowgateTransport(options));
}
