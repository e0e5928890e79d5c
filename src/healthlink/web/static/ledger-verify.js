// Verify, in the patient's browser, that each access in "Who saw my records" is in the platform's
// signed, tamper-evident log (docs/ledger.md "Proofs"; docs/web.md "Patient portal").
//
// It fetches GET /api/patient/history?proofs=true (the patient's cookie) and checks, with nothing
// but the browser's own crypto:
//  1. the checkpoint (c2sp.org/tlog-checkpoint@v1.0.0): origin, size, base64 root; size == tree_size;
//  2. its Ed25519 signature (c2sp.org/signed-note@v1.0.0) under the log's vkey, when the browser's
//     WebCrypto has Ed25519 (otherwise the verdict says the signature was not checked);
//  3. per row: the leaf hash is SHA-256(0x00 || leaf_data) (RFC 9162 §2.1.1), the leaf data names
//     this row's audit record (its sequence number), and the inclusion proof leads from the leaf to
//     the checkpoint's root (RFC 9162 §2.1.3.2, as healthlink.ledger.merkle.verify_inclusion).
// No library: the page must not trust code it did not get from the platform itself, and the
// checks are short enough to read here.
"use strict";

(function () {
  const enc = new TextEncoder();

  function hexToBytes(hex) {
    if (typeof hex !== "string" || hex.length % 2 || /[^0-9a-fA-F]/.test(hex)) throw new Error("bad hex");
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
    return out;
  }

  function b64ToBytes(s) {
    const bin = atob(s); // throws on malformed base64
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of parts) { out.set(p, off); off += p.length; }
    return out;
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    let d = 0;
    for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
    return d === 0;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  // RFC 9162 §2.1.1: leaf hash = SHA-256(0x00 || data), node hash = SHA-256(0x01 || left || right)
  const leafHash = (data) => sha256(concat(Uint8Array.of(0), data));
  const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

  // RFC 9162 §2.1.3.2, step by step (BigInt: indices beyond 2^31 would break bitwise ops on Numbers).
  async function verifyInclusion(leaf, index, size, proof, root) {
    let fn = BigInt(index), sn = BigInt(size) - 1n;
    if (fn < 0n || fn > sn || leaf.length !== 32 || root.length !== 32 || proof.some((p) => p.length !== 32)) return false;
    let r = leaf;
    for (const p of proof) {
      if (sn === 0n) return false;
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        if ((fn & 1n) === 0n) {
          while (fn !== 0n && (fn & 1n) === 0n) { fn >>= 1n; sn >>= 1n; }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n; sn >>= 1n;
    }
    return sn === 0n && equal(r, root);
  }

  // A signed note: the text (ending in a newline), a blank line, signature lines "— name base64".
  function parseNote(note) {
    const cut = note.indexOf("\n\n");
    if (cut < 0) throw new Error("not a signed note");
    const text = note.slice(0, cut + 1);
    const sigs = note.slice(cut + 2).split("\n").filter(Boolean).map((line) => {
      const m = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!m) throw new Error("bad signature line");
      return { name: m[1], raw: b64ToBytes(m[2]) };
    });
    const lines = text.split("\n");
    if (lines.length < 4 || !/^(0|[1-9][0-9]{0,18})$/.test(lines[1])) throw new Error("bad checkpoint body");
    const root = b64ToBytes(lines[2]);
    if (root.length !== 32) throw new Error("bad root hash");
    return { text, origin: lines[0], size: BigInt(lines[1]), root, sigs };
  }

  // vkey: <name>+<8 hex key id>+base64(0x01 || 32-byte Ed25519 key)
  function parseVkey(vkey) {
    // key names have no "+", base64 may: split at the first two only
    const v = vkey.trim(), i = v.indexOf("+"), j = v.indexOf("+", i + 1);
    if (i < 1 || j < 0) throw new Error("bad vkey");
    const name = v.slice(0, i), kid = v.slice(i + 1, j), material = v.slice(j + 1);
    const raw = b64ToBytes(material);
    if (!name || !/^[0-9a-fA-F]{8}$/.test(kid) || raw.length !== 33 || raw[0] !== 1) throw new Error("bad vkey");
    return { name, keyId: hexToBytes(kid), pub: raw.slice(1) };
  }

  // true, false, or null when this browser's WebCrypto has no Ed25519.
  async function verifySignature(cp, vkey) {
    const k = parseVkey(vkey);
    const sig = cp.sigs.find((s) => s.name === k.name && equal(s.raw.slice(0, 4), k.keyId));
    if (!sig || sig.raw.length !== 68) return false;
    let key;
    try {
      key = await crypto.subtle.importKey("raw", k.pub, { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      return null;
    }
    return crypto.subtle.verify({ name: "Ed25519" }, key, sig.raw.slice(4), enc.encode(cp.text));
  }

  // The leaf data of an audit record: "HLA1" || seq (8 bytes, big-endian) || salt || SHA-256(record).
  function leafSeq(data) {
    if (data.length < 12 || String.fromCharCode(...data.slice(0, 4)) !== "HLA1") return null;
    let seq = 0n;
    for (let i = 4; i < 12; i++) seq = (seq << 8n) | BigInt(data[i]);
    return seq;
  }

  async function verifyEntry(entry, cp) {
    const l = entry && entry.ledger;
    if (!l || !l.leaf_data) return { ok: false, why: "missing" };
    try {
      const data = hexToBytes(l.leaf_data);
      const lh = hexToBytes(l.leaf_hash);
      if (!equal(await leafHash(data), lh)) return { ok: false, why: "leaf" };
      if (leafSeq(data) !== BigInt(entry.seq)) return { ok: false, why: "leaf" };
      const proof = l.inclusion_proof.map(b64ToBytes);
      if (!(await verifyInclusion(lh, l.leaf_index, cp.size, proof, cp.root))) return { ok: false, why: "proof" };
      return { ok: true };
    } catch (e) {
      return { ok: false, why: "proof" };
    }
  }

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, (_, k) => (k in values ? String(values[k]) : ""));
  }

  async function run(table) {
    const verdict = document.getElementById("ledger-verdict");
    const t = verdict.dataset;
    const rows = Array.from(table.querySelectorAll("tr.access[data-seq]"));
    const mark = (row, ok, why) => {
      const td = row.querySelector("td.proof");
      td.dataset.verified = ok ? "true" : "false";
      td.textContent = ok ? t.rowOk : (why === "missing" ? t.rowMissing : t.rowBad);
    };
    let body;
    try {
      const resp = await fetch(table.dataset.proofs, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      body = await resp.json();
    } catch (e) {
      rows.forEach((r) => mark(r, false, "missing"));
      verdict.dataset.ok = "false";
      verdict.textContent = t.unavailable;
      return;
    }
    let cp = null, sigOk = false;
    if (body.checkpoint && body.vkey) {
      try {
        cp = parseNote(body.checkpoint);
      } catch (e) {
        cp = null;
      }
      try {
        sigOk = cp && cp.size === BigInt(body.tree_size) ? await verifySignature(cp, body.vkey) : false;
      } catch (e) {
        sigOk = false; // a malformed vkey or signature line
      }
    }
    const bySeq = new Map((body.history || []).map((e) => [String(e.seq), e]));
    let n = 0;
    for (const row of rows) {
      const res = cp && sigOk !== false ? await verifyEntry(bySeq.get(row.dataset.seq), cp) : { ok: false, why: cp ? "proof" : "missing" };
      mark(row, res.ok, res.why);
      if (res.ok) n++;
    }
    const values = { n, m: rows.length, size: cp ? cp.size.toString() : "?", origin: cp ? cp.origin : "?" };
    if (!cp) {
      verdict.textContent = t.noCheckpoint;
    } else if (sigOk === false) {
      verdict.textContent = fill(t.badSignature, values);
    } else {
      verdict.textContent = fill(t.summary, values) + (sigOk === null ? " " + t.noEd25519 : "");
    }
    verdict.dataset.ok = cp && sigOk !== false && n === rows.length ? "true" : "false";
    verdict.dataset.verified = String(n);
    verdict.dataset.total = String(rows.length);
    verdict.dataset.size = values.size;
    verdict.hidden = false;
  }

  function start() {
    const table = document.querySelector("table#access-history[data-proofs]");
    if (!table) return;
    if (window.crypto && crypto.subtle) { run(table); return; }
    // WebCrypto exists only in secure contexts (https, or http to loopback)
    const verdict = document.getElementById("ledger-verdict");
    verdict.textContent = verdict.dataset.unavailable;
    verdict.dataset.ok = "false";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();

  // for tests and for anyone who wants to check the checker
  window.HealthLinkLedger = { verifyInclusion, leafHash, parseNote, parseVkey, verifySignature, hexToBytes, b64ToBytes };
})();
