import type { Duplex } from "node:stream";
import { ParhelionError } from "../lib/errors.js";
import type { Message } from "./protocol/wire.js";

/** A reader of typed messages (client or server side). */
export interface TypedReader {
  push(chunk: Buffer): void;
  next(): Message | null;
  takeRest(): Buffer;
}

/**
 * Pulls whole protocol messages from a socket during a handshake, one `next()` at a time. When the
 * handshake is over, `detach()` stops listening and hands back the bytes read past the last message, so
 * the relay can take over the socket without losing or re-parsing anything.
 */
export class MessagePump {
  private waiter: { resolve: (m: Message) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  private readonly onData = (chunk: Buffer) => {
    this.reader.push(chunk);
    this.deliver();
  };
  private readonly onEnd = () => this.fail(new ParhelionError("ERR_GW_PROTOCOL", "the connection closed during the handshake"));
  private readonly onError = (err: Error) => this.fail(err);

  constructor(
    private readonly socket: Duplex,
    private readonly reader: TypedReader,
    initial?: Buffer,
  ) {
    if (initial && initial.length > 0) reader.push(initial);
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("close", this.onEnd);
    socket.on("error", this.onError);
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(err);
  }

  private deliver(): void {
    if (!this.waiter) return;
    let m: Message | null;
    try {
      m = this.reader.next();
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    if (m) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(m);
    }
  }

  /** The next whole message. Rejects when the socket ends or errors, or the reader finds a bad message. */
  next(): Promise<Message> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.deliver();
    });
  }

  /** Stops reading; answers the bytes buffered past the last message returned. */
  detach(): Buffer {
    this.socket.off("data", this.onData);
    this.socket.off("end", this.onEnd);
    this.socket.off("close", this.onEnd);
    this.socket.off("error", this.onError);
    return this.reader.takeRest();
  }
}
