// Percent-decoded views of a URL or field value, byte for byte (latin1) and lenient: once, once
// as a form (`+` is a space), and twice. A value is usually percent-encoded on top of whatever
// it was (base64 with %2B, JSON with %22 …), so a scan for it looks at these too.

export function urlDecodings(text: string): string[] {
  const pct = (t: string) =>
    t.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16)));
  const once = pct(text);
  return [once, pct(text.replaceAll("+", " ")), pct(once)];
}
