import { afterAll, describe, expect, test } from "bun:test";
import { loadLivePolicy } from "../config/proxy-config.ts";
import { SecretState } from "../credentials/secret-state.ts";
import { buildSecrets, parseSecretsJson } from "../credentials/secrets.ts";
import { compileLivePolicy } from "./egress-policy.ts";
import { explainRequest } from "./policy-test.ts";

const REAL = "ghp_R3aL0000000000000000001";
const secrets = buildSecrets(
  parseSecretsJson(
    JSON.stringify({
      credentials: [
        {
          name: "gh",
          dummy: "ghp_dummy0000000000000000001",
          real: REAL,
          hosts: ["GET,POST api.github.com/repos/acme/**"],
        },
        {
          name: "oai",
          dummy: "sk-dummy-000000000000000000001",
          real: "sk-R3aL-000000000000000000001",
          hosts: ["POST api.openai.com/v1/**"],
          in: ["header:authorization", "header:x-api-key"],
          require: true,
        },
      ],
    }),
    "secrets.json",
  ),
);
const state = SecretState.compile(secrets);
const live = loadLivePolicy(
  {
    SLAPENIR_ALLOW: "GET|POST api.github.com/repos/acme/**,api.openai.com",
    SLAPENIR_AGENT_DENYLIST: "agent:gone",
  },
  "/",
);
const egress = compileLivePolicy(live);
const explain = (agent: string, method: string, url: string) =>
  explainRequest({ agent, method, url }, egress, state, live.deny);

afterAll(() => {
  state.dispose();
  secrets.dispose();
});

describe("policy test: the decision for one request, no traffic", () => {
  test.each([
    [
      "allowed, the credential bound to the endpoint and where its dummy is swapped",
      ["agent-a", "get", "https://api.github.com/repos/acme/x?page=2"],
      true,
      [
        "agent-a GET https://api.github.com/repos/acme/x?page=2",
        "  path as the rules read it: /repos/acme/x",
        "  allowed by allow[0] GET,POST api.github.com/repos/acme/**",
        "  credential gh: its dummy swapped for the real value in header:authorization",
        "  any real value in the request: refused (403), a violation",
      ],
    ],
    [
      "a method outside the rule: 403 naming the rule missed",
      ["agent-a", "DELETE", "https://api.github.com/repos/acme/x"],
      false,
      [
        "agent-a DELETE https://api.github.com/repos/acme/x",
        "  path as the rules read it: /repos/acme/x",
        "  refused 403: DELETE https://api.github.com:443/repos/acme/x is outside allow[0] GET,POST api.github.com/repos/acme/**",
      ],
    ],
    [
      "a path read two ways: 400, as the proxy answers it (not resolved as a URL parser would)",
      ["agent-a", "POST", "https://api.openai.com/v1/%2e%2e/admin"],
      false,
      [
        "agent-a POST https://api.openai.com/v1/%2e%2e/admin",
        "  refused 400: ambiguous path: an encoded .",
      ],
    ],
    [
      "a required credential with two header surfaces",
      ["agent-a", "POST", "https://api.openai.com/v1/chat/completions"],
      true,
      [
        "agent-a POST https://api.openai.com/v1/chat/completions",
        "  path as the rules read it: /v1/chat/completions",
        "  allowed by allow[1] api.openai.com",
        "  credential oai: its dummy swapped for the real value in header:authorization, header:x-api-key",
        "  credential oai is required: a request without its dummy gets 403",
        "  any real value in the request: refused (403), a violation",
      ],
    ],
    [
      "outside the credential's endpoints: nothing swapped, but `require` holds on the whole host",
      ["agent-a", "GET", "https://api.openai.com/models"],
      true,
      [
        "agent-a GET https://api.openai.com/models",
        "  path as the rules read it: /models",
        "  allowed by allow[1] api.openai.com",
        "  credentials: none bound here (a dummy in this request would travel as written)",
        "  credential oai is required: a request without its dummy gets 403",
        "  any real value in the request: refused (403), a violation",
      ],
    ],
    [
      "a denied agent",
      ["gone", "GET", "https://api.openai.com/"],
      false,
      [
        "gone GET https://api.openai.com/",
        "  refused: the agent is denied (its TLS handshake fails)",
      ],
    ],
    ["not a URL", ["agent-a", "GET", "ftp://x/"], false, ["not an http or https URL: ftp://x/"]],
  ] as const)("%s", (_name, [agent, method, url], allowed, lines) => {
    const r = explain(agent, method, url);
    expect(r).toEqual({ allowed, lines: [...lines] });
    expect(r.lines.join("\n")).not.toContain(REAL);
  });
});
