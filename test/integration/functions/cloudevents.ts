/**
 * CloudEvents over HTTP as Eventarc sends them to a function: binary content mode, the event's
 * attributes in `ce-*` headers and its data as the body (Eventarc's delivery to Cloud Run
 * functions), beside the structured mode (one JSON document) the other tests use.
 */
import { getTestServer } from '@google-cloud/functions-framework/testing';
import request from 'supertest';

/** A CloudEvent as a structured-mode document (what test/support/pubsub.ts builds). */
export type StructuredEvent = Record<string, unknown> & { data?: unknown };

/** POSTs the event to function `fn` in binary mode; resolves with the HTTP status. */
export async function postBinary(fn: string, event: StructuredEvent): Promise<number> {
  const { data, datacontenttype, ...attributes } = event;
  let req = request(getTestServer(fn))
    .post('/')
    .set(
      'Content-Type',
      typeof datacontenttype === 'string' ? datacontenttype : 'application/json',
    );
  for (const [name, value] of Object.entries(attributes))
    req = req.set(`ce-${name}`, String(value));
  const res = await req.send(data === undefined ? '' : JSON.stringify(data));
  return res.status;
}
