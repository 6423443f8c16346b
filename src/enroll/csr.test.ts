// The proxy's CSR: SAN classification as step-cli does it, and a CSR step-ca will accept.
import { describe, expect, test } from "bun:test";
import { x509 } from "../pki/x509.ts";
import { createKeyAndCsr, generalName } from "./csr.ts";

describe("generalName", () => {
  test.each([
    ["proxy.slapenir.internal", "dns"],
    ["127.0.0.1", "ip"],
    ["::1", "ip"],
    ["fd00::1", "ip"],
    ["spiffe://slapenir/agent/agent-1", "url"],
    ["ops@example.com", "email"],
  ])("%s → %s", (value, type) => {
    expect(generalName(value)).toEqual({ type, value } as x509.JsonGeneralName);
  });
});

test("the CSR carries CN and exactly the SANs, is self-signed by the P-256 key it names", async () => {
  const { csrPem, keyPem } = await createKeyAndCsr("proxy.slapenir.internal", [
    "proxy.slapenir.internal",
    "proxy",
    "10.0.0.5",
  ]);
  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  const sanExt = csr.getExtension("2.5.29.17");
  const sans = new x509.SubjectAlternativeNameExtension(sanExt!.rawData).names.items.map((n) => [
    n.type,
    n.value,
  ]);
  expect({
    cn: csr.subjectName.getField("CN"),
    sans,
    verified: await csr.verify(),
    curve: (csr.publicKey.algorithm as { namedCurve?: string }).namedCurve,
    keyIsPkcs8: keyPem.startsWith("-----BEGIN PRIVATE KEY-----"),
  }).toEqual({
    cn: ["proxy.slapenir.internal"],
    sans: [
      ["dns", "proxy.slapenir.internal"],
      ["dns", "proxy"],
      ["ip", "10.0.0.5"],
    ],
    verified: true,
    curve: "P-256",
    keyIsPkcs8: true,
  });
});
