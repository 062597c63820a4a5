import { describe, expect, test } from "vitest";
import { GrpcStatus, grpcError } from "../../../../backend/server/grpc/grpc-status.ts";
import { SwitchyardError } from "../../../../shared/errors.ts";

describe("grpcError", () => {
  test("a full queue is UNAVAILABLE with retry-after, a 413 RESOURCE_EXHAUSTED, a 504 DEADLINE_EXCEEDED", () => {
    const full = grpcError(new SwitchyardError("queue_full", "the queue is full", { retryAfterSeconds: 2 }));
    expect(full).toMatchObject({ code: GrpcStatus.UNAVAILABLE, details: "the queue is full" });
    expect(full.trailers).toEqual({ "retry-after": "2" });
    expect(grpcError(new SwitchyardError("too_large", "big")).code).toBe(GrpcStatus.RESOURCE_EXHAUSTED);
    expect(grpcError(new SwitchyardError("deadline_exceeded", "late")).code).toBe(
      GrpcStatus.DEADLINE_EXCEEDED,
    );
    expect(grpcError(new SwitchyardError("bad_input", "no")).code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(grpcError(new SwitchyardError("not_found", "gone")).trailers).toEqual({});
  });
});
