import { describe, expect, test } from "vitest";
import { parseCommandLine } from "../../../backend/cli/options.ts";
import { tempDir } from "../models/temp-files.ts";

// The agent's config file as `--config` (or SWITCHYARD_CONFIG) reads it: same keys as the flags, and
// flags > environment > file > defaults.

async function configFile(content: unknown): Promise<string> {
  const dir = await tempDir({
    "agent.json": typeof content === "string" ? content : JSON.stringify(content),
  });
  return `${dir}/agent.json`;
}

function run(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const parsed = parseCommandLine(argv, env);
  if (parsed.kind !== "run") throw new Error("expected a run");
  return parsed.options;
}

describe("--config", () => {
  test("takes every flag by its name; lists as arrays or comma-separated strings; numbers as numbers", async () => {
    const file = await configFile({
      models: "./models",
      gpus: [0, 1],
      "max-models": 5,
      "keep-alive": 30,
      hints: "a,b",
      standalone: true,
      "log-format": "json",
      "metrics-port": 9464,
    });
    const options = run(["--config", file]);
    expect(options).toMatchObject({
      models: "./models",
      gpus: [0, 1],
      device: "cuda",
      maxModels: 5,
      keepAliveSeconds: 30,
      standalone: true,
      logFormat: "json",
      metrics: { port: 9464, host: "127.0.0.1" },
      configFile: file,
    });
  });

  test("flags win over the environment, which wins over the file", async () => {
    const file = await configFile({
      models: "./from-file",
      "max-models": 5,
      "max-concurrency": 2,
      port: 7000,
    });
    const options = run(["--config", file, "--max-models", "9"], {
      SWITCHYARD_MAX_MODELS: "8",
      SWITCHYARD_MAX_CONCURRENCY: "6",
    });
    expect(options).toMatchObject({ models: "./from-file", maxModels: 9, maxConcurrency: 6, port: 7000 });
  });

  test("SWITCHYARD_CONFIG names the file too", async () => {
    const file = await configFile({ models: "./m", name: "box-7" });
    expect(run([], { SWITCHYARD_CONFIG: file }).name).toBe("box-7");
  });

  test("mistakes are one line naming the file, the key and the fix", async () => {
    const typo = await configFile({ models: "./m", "max-modles": 3 });
    expect(() => run(["--config", typo])).toThrow(
      `--config ${typo}: unknown key "max-modles" (did you mean "max-models"?)`,
    );
    const notSwitch = await configFile({ models: "./m", standalone: "yes" });
    expect(() => run(["--config", notSwitch])).toThrow(/"standalone" is a switch: use true or false/);
    const array = await configFile(["--models", "x"]);
    expect(() => run(["--config", array])).toThrow(/must be a JSON object of flags/);
    const itself = await configFile({ config: "other.json" });
    expect(() => run(["--config", itself])).toThrow(/unknown key "config"/);
  });
});
