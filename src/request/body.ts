/**
 * Request bodies the gateway reads whole before forwarding (a chunked body, a declared one up to
 * limits.bufferBodyBytes, a /Bulk body): each bounded by limits.bodyBytes (413), and all of those
 * held at once by limits.bufferedBytes (503), so that many large bodies at the same moment cannot
 * take the process's memory. Larger declared bodies are streamed and hold nothing.
 */
import { GatewayBusy, InvalidRequest, PayloadTooLarge } from '../errors.js';

/** The bytes of request bodies held in memory by the whole gateway. */
export class BodyBudget {
  #held = 0;

  /** Bytes held now. */
  get held(): number {
    return this.#held;
  }

  /** Takes `bytes` unless the total would pass `max`; false (and nothing taken) then. */
  take(bytes: number, max: number): boolean {
    if (this.#held + bytes > max) return false;
    this.#held += bytes;
    return true;
  }

  give(bytes: number): void {
    this.#held -= bytes;
  }
}

/** The first buffer of a body read whole; it doubles as the body grows (up to its limit). */
const FIRST_BUFFER = 16 * 1024;
/** A body read whole may come in this many pieces of any size; past them, at least MIN_PIECE_BYTES each on average. */
const MIN_PIECES = 4096;
const MIN_PIECE_BYTES = 16;

/** Where one request's share of the budget is counted, given back when its response closes. */
export interface BodyAccount {
  heldBytes: number;
}

/**
 * Reads a request body into memory, refusing it past `limit` bytes (413) or when the gateway
 * holds `budgetMax` bytes of bodies already (503); `reserved`: its bytes were taken from the
 * budget before (a declared length, which `limit` then is). On refusal the stream is paused, not
 * destroyed, so that the answer can still be written on its connection (which the error path
 * then closes), and a client that goes away mid-body is an error, never a short body.
 */
export function readBody(stream: NodeJS.ReadableStream, limit: number, budget: BodyBudget, budgetMax: number, account: BodyAccount, reserved = false): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // The bytes are copied as they come into one buffer of the gateway's own: a piece Node hands
    // over is a view of the whole socket read it came in, and a body sent one byte per chunk kept a
    // read buffer alive per byte (a megabyte of body held hundreds of megabytes).
    let body = Buffer.allocUnsafe(Math.min(limit, FIRST_BUFFER));
    let size = 0;
    let pieces = 0;
    const finish = () => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.off('close', onClose);
    };
    const refuse = (error: Error) => {
      finish();
      stream.pause();
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return refuse(new PayloadTooLarge(`body over ${limit} bytes`));
      if (!reserved) {
        if (!budget.take(chunk.length, budgetMax)) return refuse(new GatewayBusy(`request bodies held in memory would pass ${budgetMax} bytes`));
        account.heldBytes += chunk.length;
      }
      // Each piece costs the parser and this reader a few microseconds, whatever its size: a body
      // in pieces of a byte or two is seconds of the event loop per megabyte.
      pieces += 1;
      if (pieces > MIN_PIECES && size < pieces * MIN_PIECE_BYTES) {
        return refuse(new InvalidRequest(`body in ${pieces} pieces of ${Math.floor(size / pieces)} bytes on average`, `The request body is sent in pieces smaller than ${MIN_PIECE_BYTES} bytes on average`));
      }
      const at = size - chunk.length;
      if (size > body.length) {
        const grown = Buffer.allocUnsafe(Math.min(limit, Math.max(size, body.length * 2)));
        body.copy(grown, 0, 0, at);
        body = grown;
      }
      chunk.copy(body, at);
    };
    const onEnd = () => {
      finish();
      resolve(body.subarray(0, size));
    };
    const onError = (error: Error) => {
      finish();
      reject(error);
    };
    const onClose = () => {
      finish();
      reject(new InvalidRequest('the client closed the connection before the end of the body', 'The request body is incomplete'));
    };
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onError);
    stream.on('close', onClose);
  });
}
