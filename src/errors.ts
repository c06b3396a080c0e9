/**
 * Every error the gateway answers with, and how each becomes a wire response (INTERFACE.md,
 * "Wire responses"). The public `detail` is fixed per class; the specific reason goes to the
 * access log only, so that a client learns nothing it could use to probe a token.
 */

/** An OAuth 2.0 bearer error code (RFC 6750 section 3.1). */
export type BearerErrorCode = 'invalid_request' | 'invalid_token' | 'insufficient_scope';

/** Base class: a stable `code`, an HTTP status, a fixed public detail and a private reason. */
export abstract class GatewayError extends Error {
  abstract readonly code: string;
  abstract readonly statusCode: number;
  /** The text sent to the client; never contains request data. */
  abstract readonly detail: string;
  /** RFC 6750 error attribute for `WWW-Authenticate`, when the token is at fault. */
  readonly bearerError: BearerErrorCode | undefined = undefined;
  /** Whether a `WWW-Authenticate: Bearer` challenge goes with the response. */
  readonly challenge: boolean = false;
  /** SCIM `scimType` (RFC 7644 section 3.12), when one fits. */
  readonly scimType: string | undefined = undefined;

  constructor(readonly reason: string, options?: ErrorOptions) {
    super(reason, options);
    this.name = new.target.name;
  }

  /** Extra response headers (Allow, Retry-After, WWW-Authenticate scope, ...). */
  headers(): Record<string, string> {
    return {};
  }
}

/** No bearer token in the request (RFC 6750 section 3.1: no error attribute). */
export class MissingToken extends GatewayError {
  readonly code = 'missing_token';
  readonly statusCode = 401;
  readonly detail = 'A bearer token is required';
  override readonly challenge = true;
}

/** A malformed or ambiguous request-target: refused before any token work. */
export class InvalidTarget extends GatewayError {
  readonly code = 'invalid_target';
  readonly statusCode = 400;
  readonly detail = 'The request-target is malformed or ambiguous';
}

/** A request that cannot be read with certainty (Bulk body, framing). */
export class InvalidRequest extends GatewayError {
  readonly code = 'invalid_request';
  readonly statusCode = 400;
  override readonly scimType = 'invalidSyntax';
  constructor(reason: string, readonly detail = 'The request is malformed or ambiguous', options?: ErrorOptions) {
    super(reason, options);
  }
}

/** The credential itself is malformed: two Authorization headers, bad token syntax. */
export class InvalidBearerRequest extends GatewayError {
  readonly code = 'invalid_request';
  override readonly bearerError = 'invalid_request';
  override readonly challenge = true;
  constructor(reason: string, readonly statusCode: 400 | 401 = 401, readonly detail = 'The Authorization header is malformed') {
    super(reason);
  }
}

/** The token is invalid, expired, inactive, or of the wrong kind. */
export class InvalidToken extends GatewayError {
  readonly code = 'invalid_token';
  readonly statusCode = 401;
  override readonly bearerError = 'invalid_token';
  override readonly challenge = true;
  readonly detail = 'The access token is invalid or expired';
}

/** The token is valid but lacks a scope the operation requires. */
export class InsufficientScope extends GatewayError {
  readonly code = 'insufficient_scope';
  readonly statusCode = 403;
  override readonly bearerError = 'insufficient_scope';
  override readonly challenge = true;
  readonly detail: string;
  /** The scopes the operation requires (one alternative), space separated in the challenge. */
  constructor(readonly required: readonly string[], reason = 'token lacks a required scope') {
    super(reason);
    this.detail = `The access token lacks a required scope: ${required.join(' ')}`;
  }
}

/** The path is not in the table. */
export class RouteNotFound extends GatewayError {
  readonly code = 'not_found';
  readonly statusCode = 404;
  readonly detail = 'No such endpoint';
}

/** The path is in the table, the method is not. */
export class MethodNotAllowed extends GatewayError {
  readonly code = 'method_not_allowed';
  readonly statusCode = 405;
  readonly detail = 'Method not allowed on this endpoint';
  constructor(readonly allow: readonly string[], reason = 'method not in the table') {
    super(reason);
  }
  override headers(): Record<string, string> {
    return { allow: this.allow.join(', ') };
  }
}

/** The request body exceeds `limits.bodyBytes`. */
/** A header block over limits.headerBytes, or more header lines than Node keeps. */
export class HeaderTooLarge extends GatewayError {
  readonly code = 'header_too_large';
  readonly statusCode = 431;
  readonly detail = 'The request header block is too large';
}

export class PayloadTooLarge extends GatewayError {
  readonly code = 'payload_too_large';
  readonly statusCode = 413;
  readonly detail = 'The request body is too large';
}

/** A body the gateway must read (Bulk) in a media type it cannot read with certainty. */
export class UnsupportedMediaType extends GatewayError {
  readonly code = 'unsupported_media_type';
  readonly statusCode = 415;
  constructor(reason: string, readonly detail = 'The request body must be application/scim+json or application/json') {
    super(reason);
  }
}

/** An `Expect` other than 100-continue (RFC 9110 section 10.1.1). */
export class ExpectationFailed extends GatewayError {
  readonly code = 'expectation_failed';
  readonly statusCode = 417;
  readonly detail = 'The only expectation supported is 100-continue';
}

/** The request-target exceeds `limits.targetBytes`. */
export class TargetTooLong extends GatewayError {
  readonly code = 'uri_too_long';
  readonly statusCode = 414;
  readonly detail = 'The request-target is too long';
}

/** The authorization server (or the JWKS) could not answer: fail closed. */
export class AuthServerUnavailable extends GatewayError {
  readonly code = 'auth_server_unavailable';
  readonly statusCode = 503;
  readonly detail = 'The authorization server is unavailable; retry later';
  constructor(reason: string, readonly retryAfterSeconds = 5, options?: ErrorOptions) {
    super(reason, options);
  }
  override headers(): Record<string, string> {
    return { 'retry-after': String(this.retryAfterSeconds) };
  }
}

/** The gateway is stopping: a request that arrives on a kept-alive connection meanwhile. */
export class ShuttingDown extends GatewayError {
  readonly code = 'shutting_down';
  readonly statusCode = 503;
  readonly detail = 'The gateway is shutting down; retry on another connection';
  override headers(): Record<string, string> {
    return { 'retry-after': '1', connection: 'close' };
  }
}

/** The request bodies the gateway holds in memory have reached limits.bufferedBytes, or the streamed ones half the upstream pool. */
export class GatewayBusy extends GatewayError {
  readonly code = 'gateway_busy';
  readonly statusCode = 503;
  constructor(reason: string, readonly detail = 'The gateway is holding too many request bodies; retry later') {
    super(reason);
  }
  override headers(): Record<string, string> {
    return { 'retry-after': '1' };
  }
}

/** The upstream refused the connection or failed mid-way. */
export class UpstreamUnavailable extends GatewayError {
  readonly code = 'upstream_unavailable';
  readonly statusCode = 502;
  readonly detail = 'The upstream service is unavailable';
  /** For the metric: refused (nothing listens), reset (the connection broke), other (TLS, DNS, ...). */
  constructor(reason: string, readonly kind: 'refused' | 'reset' | 'other' = 'other') {
    super(reason);
  }
}

/** The upstream did not answer in `upstream.timeoutMs`. */
export class UpstreamTimeout extends GatewayError {
  readonly code = 'upstream_timeout';
  readonly statusCode = 504;
  readonly detail = 'The upstream service did not answer in time';
}

/** The client took longer than `limits.requestTimeoutMs` to send its request. */
export class RequestTimeout extends GatewayError {
  readonly code = 'request_timeout';
  readonly statusCode = 408;
  readonly detail = 'The request took too long to arrive';
}

/** Anything unexpected: a 500, never a forward. */
export class InternalError extends GatewayError {
  readonly code = 'internal_error';
  readonly statusCode = 500;
  readonly detail = 'Internal gateway error';
}

/** A config problem: the process exits 2. */
export class ConfigError extends Error {
  readonly code = 'config_error';
  /**
   * `warnings`: what was ignored but may be a mistake, printed with the problems. `validated`: the
   * keys that did validate, so that `check` can still read the OpenAPI file they name.
   */
  constructor(readonly problems: readonly string[], readonly warnings: readonly string[] = [], readonly validated?: unknown) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
  }
}

/** A problem in the OpenAPI document; reported like a config problem. */
export class OpenApiError extends ConfigError {}

/** The SCIM error body (RFC 7644 section 3.12) for a gateway error. */
export function scimErrorBody(error: GatewayError): string {
  const body: Record<string, unknown> = {
    schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'],
    status: String(error.statusCode),
  };
  if (error.scimType !== undefined) body.scimType = error.scimType;
  body.detail = error.detail;
  return JSON.stringify(body);
}

/** The `WWW-Authenticate` value for a gateway error, or undefined when none belongs. */
export function wwwAuthenticate(error: GatewayError, realm: string): string | undefined {
  if (!error.challenge && error.bearerError === undefined) return undefined;
  let value = `Bearer realm="${realm}"`;
  if (error.bearerError !== undefined) value += `, error="${error.bearerError}"`;
  if (error instanceof InsufficientScope) value += `, scope="${error.required.join(' ')}"`;
  return value;
}
