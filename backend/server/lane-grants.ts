/**
 * The main thread's side of one intake thread's lanes (backend/replica/lane-protocol.ts): after it served
 * a request of a model for that thread, it grants the thread a lane to the model's session, unless one is
 * open or on its way; it ends each lane's lease once the thread closed it. A model that cannot have a lane
 * now (not loaded, several sessions, several replicas) is not asked again for a lane's lifetime, so that its
 * requests do not each pay for the question.
 */
import type { TransferListItem } from "node:worker_threads";
import { requestedModelKey } from "../../shared/model-names.ts";
import type { ReplicaPool } from "../pool/replica-pool.ts";
import { LANE_LIFETIME_MS } from "../replica/lane-protocol.ts";
import type { LaneGrant } from "../replica/replica.ts";
import type { LaneNotice, MainMessage, WireInferCall } from "./intake-protocol.ts";

export class LaneGrants {
  readonly #pool: ReplicaPool;
  readonly #send: (message: MainMessage, transfer?: readonly TransferListItem[]) => void;
  readonly #log: (event: string, fields: Record<string, unknown>) => void;
  /** The lane that takes each model's requests now (or is being granted), by requested key. */
  readonly #current = new Map<string, number>();
  /** Models that could not have a lane, until when. */
  readonly #declined = new Map<string, number>();
  /** Lanes granted and not yet closed, with their leases. */
  readonly #granted = new Map<number, { key: string; grant: LaneGrant }>();
  #nextId = 0;
  #ended = false;

  constructor(
    pool: ReplicaPool,
    send: (message: MainMessage, transfer?: readonly TransferListItem[]) => void,
    log: (event: string, fields: Record<string, unknown>) => void,
  ) {
    this.#pool = pool;
    this.#send = send;
    this.#log = log;
  }

  /** The main path served `call` for this thread: its model gets a lane if it can have one. */
  offer(call: WireInferCall): void {
    // A hint asks the router to place the request: it keeps going through the router.
    if (this.#ended || call.hint !== undefined) return;
    const key = requestedModelKey(call.model, call.version);
    if (this.#current.has(key) || (this.#declined.get(key) ?? 0) > Date.now()) return;
    this.#nextId += 1;
    const laneId = this.#nextId;
    this.#current.set(key, laneId);
    const declined = () => {
      if (this.#current.get(key) === laneId) this.#current.delete(key);
      this.#declined.set(key, Date.now() + LANE_LIFETIME_MS);
    };
    this.#pool
      .openLane(call.model, call.version, { revoke: () => this.#send({ type: "revoke-lane", laneId }) })
      .then(
        (grant) => {
          if (grant === undefined) return declined();
          if (this.#ended) {
            grant.port.close();
            grant.close();
            return;
          }
          this.#granted.set(laneId, { key, grant });
          this.#send(
            {
              type: "lane",
              laneId,
              key,
              port: grant.port,
              model: grant.model,
              replica: grant.replica,
              settings: grant.settings,
              classes: grant.classes,
              lifetimeMs: LANE_LIFETIME_MS,
            },
            [grant.port],
          );
        },
        (error: unknown) => {
          declined();
          this.#log("lane not opened", { model: call.model, error: String(error) });
        },
      );
  }

  /** What the thread said of one of its lanes. */
  notice(notice: LaneNotice): void {
    const granted = this.#granted.get(notice.laneId);
    if (granted === undefined) return;
    if (this.#current.get(granted.key) === notice.laneId) this.#current.delete(granted.key);
    if (notice.type === "lane-closed") {
      this.#granted.delete(notice.laneId);
      granted.grant.close();
    }
  }

  /** The thread is gone: every lane's lease ends (their ports closed with the thread). */
  end(): void {
    this.#ended = true;
    for (const { grant } of this.#granted.values()) grant.close();
    this.#granted.clear();
    this.#current.clear();
  }
}
