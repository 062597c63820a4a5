import { readdirSync, readFileSync } from "node:fs";

/**
 * Resident memory of a whole process group (Linux /proc): `wrangler dev` is node plus workerd, an agent is
 * one node process; the harness starts each as the leader of its own group. Processes that end while being
 * read are skipped.
 */
export function groupRssBytes(groupId: number): number {
  let total = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // Fields after the command name (which may hold spaces, inside parentheses): state, ppid, pgrp, ...
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) !== groupId) continue;
      const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${entry}/status`, "utf8"))?.[1];
      total += Number(rss ?? 0) * 1024;
    } catch {
      // Gone meanwhile.
    }
  }
  return total;
}
