// The one error type of the PKI area (embedded CA, leaf minting, agent identity).
// Messages name the file and what is wrong with it; they must never carry key material,
// certificate contents or anything read from a key file.

export type PkiErrorCode =
  | "file-missing"
  | "file-garbled"
  | "file-permissions"
  | "cert-expired"
  | "cert-not-yet-valid"
  | "cert-mismatch"
  | "bad-name"
  | "bad-host"
  | "bad-argument"
  | "locked";

export class PkiError extends Error {
  override readonly name = "PkiError";
  constructor(
    readonly code: PkiErrorCode,
    message: string,
    /** The file the problem is about, when there is one. */
    readonly file?: string,
  ) {
    super(message);
  }
}
