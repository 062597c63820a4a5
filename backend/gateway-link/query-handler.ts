import { SwitchyardError } from "../../shared/errors.ts";
import type { AnswerFrame, Query, QueryAnswer, QueryFrame } from "../../shared/protocol/frames.ts";
import type { ModelService } from "../models/model-service.ts";

/**
 * Answers the gateway's queries (frames.ts QuerySchema) from the agent's ModelService: each query gets
 * exactly one answer frame, a value or the OIP error it failed with, so the registry never waits on one.
 */
export async function answerQuery(frame: QueryFrame, models: ModelService): Promise<AnswerFrame> {
  try {
    const value = await run(frame.query, models);
    return { type: "answer", id: frame.id, result: { ok: true, value } };
  } catch (error) {
    const failure = SwitchyardError.from(error);
    return {
      type: "answer",
      id: frame.id,
      result: { ok: false, status: failure.status, message: failure.message.slice(0, 4096) },
    };
  }
}

async function run(query: Query, models: ModelService): Promise<QueryAnswer<Query["kind"]>> {
  switch (query.kind) {
    case "describe":
      return models.describe(query.model, query.version);
    case "stats":
      return models.statistics(query.model, query.version);
    case "load": {
      const signature = await models.load(query.model, query.version, {
        pin: query.pin,
        replica: query.replica,
      });
      return { signature, state: models.replicaState(query.replica) };
    }
    case "keep-alive":
      return { replicas: models.setKeepAlive(query.model, query.keepAliveMs) };
    case "unload":
      return {
        unloaded: await models.unload(query.model, query.version, {
          evict: query.evict,
          ...(query.replica === undefined ? {} : { replica: query.replica }),
        }),
      };
  }
}
