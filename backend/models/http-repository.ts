/**
 * A model repository behind an http(s) base URL, downloaded into a local cache. The gateway serves the
 * same protocol, so an agent can take its models from the gateway it connects to.
 *
 * Protocol (every request carries the configured headers, e.g. `Authorization: Bearer <token>`, and
 * `Accept-Encoding: identity`):
 *
 *   GET {base}/repository.json        optional listing; 404 means the repository publishes none
 *     { "models": [ { "name": "det", "version": "1",
 *                     "files": { "model.onnx":  { "size": 123, "sha256": "<hex>" },
 *                                "config.json": { "size": 45,  "sha256": "<hex>" } } } ] }
 *   GET {base}/{model}/{version}/config.json   optional; 404 means the version has none (not requested
 *                                              when the version's "files" in repository.json omit it)
 *   GET {base}/{model}/{version}/model.onnx    the model; 404 means the version does not exist
 *   GET {base}/{model}/{version}/warmup/{file} each input_data_file config.json's model_warmup names,
 *   GET {base}/{model}/{version}/labels/{file} each label_filename of its outputs (listed in "files" as
 *                                              "warmup/{file}", "labels/{file}"); 404, or a "files" that
 *                                              omits it, means the repository has none, and loading the
 *                                              model fails naming the sample or output
 *
 * Integrity: a file's size comes from repository.json or Content-Length, its SHA-256 from repository.json,
 * from config.json's "sha256" (for model.onnx), or from the response headers `Repr-Digest: sha-256=:<b64>:`
 * (RFC 9530), `Digest: sha-256=<b64>` or `X-Checksum-Sha256: <hex>`. Every one of them that is present
 * must hold; with none, the size is all that is checked. model.onnx streams to
 * `<cacheDir>/<host>-<hash>/<model>/<version>/model.onnx.partial`, hashed on the way, and is renamed into
 * place only once verified; anything that fails is deleted and never becomes a model.
 *
 * index() lists repository.json, or without one the versions already cached. resolve() with a version
 * serves a cached copy without asking the server (versions are immutable); otherwise it reads
 * repository.json (absent: it tries the files directly), then config.json, then model.onnx. resolve()
 * without a version takes the highest in repository.json, or without one the highest cached, else "1".
 * The files config.json names are fetched before model.onnx, and for a cached version whenever one it names
 * is not cached. Concurrent resolves of one version share one download.
 */
import { modelNotFound, SwitchyardError, versionNotFound } from "../../shared/errors.ts";
import {
  defaultModelConfig,
  type ModelConfig,
  parseModelConfig,
  type ReferencedFile,
  referencedFiles,
} from "../../shared/model-config.ts";
import {
  compareModelVersions,
  highestModelVersion,
  parseModelName,
  parseModelVersion,
} from "../../shared/model-names.ts";
import { referencedModelFile } from "../../shared/protocol/model-listing.ts";
import {
  cacheRootFor,
  commitModel,
  listCachedModels,
  missingReferencedFiles,
  preparePartial,
  prepareReferencedPartial,
  readCachedModel,
  referencedDirOf,
} from "./download-cache.ts";
import {
  type FileInfo,
  fetchManifest,
  findInManifest,
  type Manifest,
  versionsInManifest,
} from "./http-manifest.ts";
import type { ModelRepository, RepositoryEntry, RepositoryOptions, ResolvedModel } from "./repository.ts";
import {
  type DownloadRequest,
  downloadToFile,
  downloadToMemory,
  type Expectation,
} from "./verified-download.ts";

const MAX_CONFIG_BYTES = 1024 * 1024;

/** What is known about repository.json: `undefined` inside means the repository publishes none. */
interface ManifestLookup {
  manifest: Manifest | undefined;
}

export function openHttpRepository(base: string, options: RepositoryOptions): ModelRepository {
  const baseUrl = parseBaseUrl(base);
  const source = baseUrl.href;
  const cacheRoot = cacheRootFor(options.cacheDir, baseUrl);
  const http = { fetch: options.fetch ?? globalThis.fetch, headers: options.headers ?? {} };
  const inFlight = new Map<string, Promise<ResolvedModel>>();
  /** Files config.json names that the repository does not have ("<name>/<version>/<kind>/<file>"). */
  const absent = new Set<string>();

  const urlOf = (path: string) => new URL(path, baseUrl);
  const lookUpManifest = async (): Promise<ManifestLookup> => ({
    manifest: await fetchManifest({ ...http, url: urlOf("repository.json") }),
  });

  async function highestVersion(name: string): Promise<{ version: string; lookup: ManifestLookup }> {
    const lookup = await lookUpManifest();
    if (lookup.manifest !== undefined) {
      const version = highestModelVersion(versionsInManifest(lookup.manifest, name));
      if (version === undefined) throw modelNotFound(name);
      return { version, lookup };
    }
    const cached = (await listCachedModels(cacheRoot)).filter((entry) => entry.name === name);
    return { version: highestModelVersion(cached.map((entry) => entry.version)) ?? "1", lookup };
  }

  /** A GET of one of the version's files (its path below the version, "warmup/row.bin"), checked against its listing. */
  const requestOf = (
    name: string,
    version: string,
    file: string,
    info: FileInfo | undefined,
  ): DownloadRequest => ({
    ...http,
    url: urlOf([name, version, ...file.split("/")].map(encodeURIComponent).join("/")),
    label: `${name}/${version}/${file}`,
    expected: info === undefined ? [] : [{ source: "repository.json", ...info }],
  });

  /**
   * Downloads the files the config names (warm-up data, labels) that the cache lacks. One the repository does
   * not have (404, or left out of a version's complete "files") is left out: the load then fails naming the
   * sample or output that wanted it.
   */
  async function fetchReferencedFiles(
    name: string,
    version: string,
    config: ModelConfig,
    known?: ManifestLookup,
  ) {
    const keyOf = (referenced: ReferencedFile) => `${name}/${version}/${referencedModelFile(referenced)}`;
    const wanted = referencedFiles(config).filter((referenced) => !absent.has(keyOf(referenced)));
    const missing = await missingReferencedFiles(cacheRoot, name, version, wanted);
    if (missing.length === 0) return;
    const { manifest } = known ?? (await lookUpManifest());
    const listed = manifest === undefined ? undefined : findInManifest(manifest, name, version)?.files;
    for (const referenced of missing) {
      const file = referencedModelFile(referenced);
      const info = listed?.[file];
      // Versions are immutable: one the repository lacks is not asked for again (the load fails without it).
      if (listed !== undefined && info === undefined) {
        absent.add(keyOf(referenced));
        continue;
      }
      const download = await prepareReferencedPartial(cacheRoot, name, version, referenced);
      if ((await downloadToFile(requestOf(name, version, file, info), download.partialPath)) === undefined)
        absent.add(keyOf(referenced));
      else await download.commit();
    }
  }

  async function fetchVersion(name: string, version: string, known?: ManifestLookup): Promise<ResolvedModel> {
    const warmupDir = referencedDirOf(cacheRoot, name, version, "warmup");
    const labelsDir = referencedDirOf(cacheRoot, name, version, "labels");
    const cached = await readCachedModel(cacheRoot, name, version);
    if (cached !== undefined) {
      const config = configFrom(cached.configText, `${name}/${version}/config.json`);
      await fetchReferencedFiles(name, version, config, known);
      const { path, bytes, sha256 } = cached;
      return { name, version, path, bytes, sha256, config, warmupDir, labelsDir };
    }

    const lookup = known ?? (await lookUpManifest());
    const { manifest } = lookup;
    const listing = manifest === undefined ? undefined : findInManifest(manifest, name, version);
    if (manifest !== undefined && listing === undefined) {
      const versions = versionsInManifest(manifest, name).sort(compareModelVersions);
      throw versions.length === 0 ? modelNotFound(name) : versionNotFound(name, version, versions);
    }
    const request = (file: string, info: FileInfo | undefined) => requestOf(name, version, file, info);

    // config.json first: it is small, may be malformed (then there is no point downloading the model),
    // and may carry the model's sha256.
    let configText: string | undefined;
    const configInfo = listing?.files?.["config.json"];
    if (listing?.files === undefined || configInfo !== undefined) {
      const downloaded = await downloadToMemory(request("config.json", configInfo), MAX_CONFIG_BYTES);
      if (downloaded === undefined && configInfo !== undefined) {
        throw new SwitchyardError(
          "model_load_failed",
          `repository.json lists ${name}/${version}/config.json but the server has no such file`,
        );
      }
      configText = downloaded === undefined ? undefined : new TextDecoder().decode(downloaded.body);
    }
    const config = configFrom(configText, `${name}/${version}/config.json`);
    // Before the model: they are small, and a repository that cannot serve them fails before the big download.
    await fetchReferencedFiles(name, version, config, lookup);

    const modelRequest = request("model.onnx", listing?.files?.["model.onnx"]);
    if (config.sha256 !== undefined) {
      modelRequest.expected.push({ source: "config.json", sha256: config.sha256 } satisfies Expectation);
    }
    const onProgress = options.onProgress;
    if (onProgress !== undefined) {
      modelRequest.onProgress = (received, total) =>
        onProgress(total === undefined ? { name, version, received } : { name, version, received, total });
    }
    const partialPath = await preparePartial(cacheRoot, name, version);
    const downloaded = await downloadToFile(modelRequest, partialPath);
    if (downloaded === undefined) throw versionNotFound(name, version, []);
    const path = await commitModel(cacheRoot, name, version, { partialPath, ...downloaded, configText });
    const { bytes, sha256 } = downloaded;
    return { name, version, path, bytes, sha256, config, warmupDir, labelsDir };
  }

  /** One fetch per version at a time: later callers wait for the download already under way. */
  function fetchOnce(name: string, version: string, known?: ManifestLookup): Promise<ResolvedModel> {
    const key = `${name}/${version}`;
    const running = inFlight.get(key);
    if (running !== undefined) return running;
    const started = fetchVersion(name, version, known).finally(() => inFlight.delete(key));
    inFlight.set(key, started);
    return started;
  }

  return {
    source,
    local: false,

    async index(): Promise<RepositoryEntry[]> {
      const { manifest } = await lookUpManifest();
      if (manifest === undefined) return listCachedModels(cacheRoot);
      return manifest.models.map(({ name, version, files }) => {
        const bytes = files?.["model.onnx"]?.size;
        return bytes === undefined ? { name, version } : { name, version, bytes };
      });
    },

    async resolve(name: string, version?: string): Promise<ResolvedModel> {
      parseModelName(name);
      if (version !== undefined) return fetchOnce(name, parseModelVersion(version));
      const highest = await highestVersion(name);
      return fetchOnce(name, highest.version, highest.lookup);
    },
  };
}

/** The base URL with a trailing slash (so relative paths land beneath it); refuses what fetch cannot use. */
function parseBaseUrl(base: string): URL {
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new SwitchyardError("bad_input", `invalid model repository URL ${JSON.stringify(base)}`);
  }
  if (url.username !== "" || url.password !== "") {
    throw new SwitchyardError(
      "bad_input",
      "credentials in the model repository URL are not supported: pass them as headers (a bearer token)",
    );
  }
  if (url.search !== "" || url.hash !== "") {
    throw new SwitchyardError(
      "bad_input",
      "the model repository URL must not have a query string or fragment",
    );
  }
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url;
}

function configFrom(text: string | undefined, where: string): ModelConfig {
  return text === undefined ? defaultModelConfig() : parseModelConfig(text, where);
}
