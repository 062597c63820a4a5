/** Requests (rows, for a model that batches) a model has run, from a server's statistics over HTTP. */
export async function inferenceCount(baseUrl: string, model: string): Promise<number> {
  const stats = (await (await fetch(`${baseUrl}/v2/models/${model}/stats`)).json()) as {
    model_stats: { inference_count: number }[];
  };
  return stats.model_stats.reduce((sum, entry) => sum + entry.inference_count, 0);
}
