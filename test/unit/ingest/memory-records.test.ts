/** The in-memory ingest records pass the contract the Firestore ones pass. */
import { MemoryIngestRecords } from '../../../core/ingest/memory-records';
import { ingestRecordsContract } from '../../support/ingest-records-contract';

ingestRecordsContract('in memory', (clock) => Promise.resolve(new MemoryIngestRecords(clock)));
