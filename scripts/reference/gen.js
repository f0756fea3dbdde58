'use strict';
// Writes the reference outputs of the JS Universal Sentence Encoder Lite:
//   testdata/use-lite/reference_tokens.jsonl      {"source","text","ids"}
//   testdata/use-lite/reference_embeddings.jsonl  {"source","text","ids","embedding"}
//   internal/benchdata/imdb.txt                   the 1,000 imdb sentences, one a line
// ids come from the library's own tokenizer (model.tokenizer.encode); embeddings from
// model.embed([text]) (a batch of one) on TF.js 4.22.0, wasm backend (SIMD, 1 thread).
//
//   node gen.js [--cache DIR] [--backend wasm|cpu|shipped]
//
// Output is deterministic: the same inputs give byte-identical files.

const fs = require('fs');
const path = require('path');
const ds = require('./datasets');
const { loadModel, f32 } = require('./lib');

const ROOT = path.resolve(__dirname, '..', '..');
const OUT_TOKENS = path.join(ROOT, 'testdata', 'use-lite', 'reference_tokens.jsonl');
const OUT_EMB = path.join(ROOT, 'testdata', 'use-lite', 'reference_embeddings.jsonl');
const OUT_IMDB = path.join(ROOT, 'internal', 'benchdata', 'imdb.txt');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : def;
}

// JSON with invisible and line-breaking characters escaped, so that any line reader
// (including ones that split on U+0085 or U+2028) sees one object per line.
function jsonLine(obj) {
  return JSON.stringify(obj).replace(
    /[\u007f-\u00a0\u00ad\u061c\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\ufeff\ufff0-\ufffd]/g,
    (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}

// Hand-written edge cases for the tokenizer.
function edgeCases(imdb) {
  const long = [];
  let n = 0;
  for (let i = 0; n < 5000; i++) {
    const s = imdb[(i * 37) % imdb.length].text;
    long.push(s);
    n += s.length + 1;
  }
  const text5000 = long.join(' ').slice(0, 5000);
  return [
    // empty and whitespace
    '', ' ', '  ', '     ', 'a  b', 'a   b', '   leading spaces', 'trailing spaces   ', ' both ',
    '\t', 'a\tb', '\tindented', '\n', 'line one\nline two', 'a\n\nb', '\r\n', 'a\r\nb', '\r',
    '\u00a0', 'a\u00a0b', 'no\u00a0break\u00a0space', '\u2028', 'a\u2028b', '\u2029',
    '\u200b', 'zero\u200bwidth', '\u0085', 'next\u0085line', '\u3000', 'ideographic\u3000space',
    '\u2003em space', '\ufeffbom', '\u0000', 'a\u0000b', '\u00ad', 'soft\u00adhyphen',
    // score quirks (null / zero scores, duplicate pieces)
    ':)', ' :)', 'hi :)', ':(', 'so sad :(', ':-)', ' :-)', '):', ':', '::', ':::',
    '://', 'http://example.com', 'https://www.example.com/a/b?c=d', ':00', 'at 10:00', '10:00:00',
    '\u201d5', '\u201d5\u201d5', '\u201c5\u201d', 'he said \u201d5', '"5', '\u201cquoted\u201d',
    // emoji and astral characters
    '\ud83d\ude00', 'I love it \ud83d\ude00\ud83d\udc4d', '\ud83d\ude00\ud83d\ude00\ud83d\ude00',
    'a\ud83d\ude00b\ud83d\ude00c', '\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67 family',
    '\ud83d\udc4d\ud83c\udffd', '\ud83c\uddfa\ud83c\uddf8', '\u2764\ufe0f', '\ud840\udf0e',
    '\ud835\udd18\ud835\udd2b\ud835\udd26\ud835\udd20\ud835\udd2c\ud835\udd21\ud835\udd22',
    '\ud834\udd1e music', '\ud800\udc00', 'lone \ud83d surrogate',
    // CJK and other scripts
    '\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8', '\u4e2d\u6587\u53e5\u5b50\u3002',
    '\ud55c\uad6d\uc5b4 \ubb38\uc7a5', '\uff76\uff80\uff76\uff85', '\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440',
    '\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1', '\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645',
    '\u05e9\u05dc\u05d5\u05dd', '\u0928\u092e\u0938\u094d\u0924\u0947', '\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35',
    // accents and combining marks
    'caf\u00e9', 'cafe\u0301', 'e\u0301\u0302', 'na\u00efve r\u00e9sum\u00e9', 'nai\u0308ve', 'A\u030a', '\u212b',
    '\u00dcn\u00efc\u00f6d\u00e9', 'Stra\u00dfe', 'q\u0323\u0307', '\u0301', 'Qu\u00e9bec',
    // NFKC
    '\ufb01nance', '\ufb01', '\ufb02ow', '\uff46\uff55\uff4c\uff4c\uff0d\uff57\uff49\uff44\uff54\uff48',
    '\uff21\uff22\uff23 \uff11\uff12\uff13', '\u2460\u2461\u2462', '\u2160\u216b', 'x\u00b2', '\u00bd cup',
    '\u2122', '\u338f', '\u2026', 'wait\u2026', '\u00b5', '\u2103', '\u33a1', '\u01c4', '\u2474',
    // C1 controls found in the imdb fixture
    'masterpiece\u0096 truly', 'well\u0097done',
    // case and digits
    'the movie was great', 'The Movie Was Great', 'THE MOVIE WAS GREAT', 'A', 'a', 'I', '.', ',',
    '1234567890', '3.14159', '$100.00', '50%', '#hashtag', '@user', 'e-mail', 'don\'t', 'won\'t',
    'Supercalifragilisticexpialidocious', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
    'pneumonoultramicroscopicsilicovolcanoconiosis',
    // punctuation soup
    '!!!???...,,,;;;:::---', '((([[[{{{}}}]]])))', '$$$%%%^^^&&&***', '\'"`~', '<html><body>hi</body></html>',
    '.,;:!?-_()[]{}<>/\\|@#$%^&*+=~`\'"', '!!!', '...', '?!?!', '----------', '==========',
    // long
    text5000,
  ];
}

async function main() {
  const cache = arg('--cache', ds.defaultCache());
  const backend = arg('--backend', 'wasm');
  const d = ds.loadAll(cache);
  const { model, versions } = await loadModel(backend, { threads: 1 });
  const enc = (t) => model.tokenizer.encode(t);
  const skipped = [];

  // ---- tokens ----
  const tok = [];
  const add = (source, text) => {
    if (/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(text)) {
      skipped.push({ source, why: 'lone surrogate', text });
      return;
    }
    tok.push({ source, text, ids: enc(text) });
  };
  for (const name of ['imdb', 'yelp', 'amazon']) for (const r of d[name]) add(name, r.text);
  d.spam.forEach((e, i) => {
    if (i % 20 !== 0) return;
    const body = ds.cutAtSpace(e.body, 2000);
    if (body.trim() === '') { skipped.push({ source: 'spam', why: 'empty body', id: `${e.group}/${e.id}` }); return; }
    add('spam', body);
  });
  d.spam.forEach((e, i) => { if (i % 200 === 100) add('spam-raw', ds.cutAtSpace(e.raw, 1500)); });
  d.brown.forEach((doc, i) => { if (i % 2 === 0) add('brown', ds.brownPassage(doc)); });
  for (const t of edgeCases(d.imdb)) add('edge', t);

  // ---- embeddings: 111 sentiment + 3 custom + 6 edge + 50 spam + 30 brown = 200 ----
  const embTexts = [];
  for (const name of ['imdb', 'yelp', 'amazon']) {
    for (let i = 0; i < 37; i++) embTexts.push({ source: name, text: d[name][i * 27].text });
  }
  for (const t of ['the movie was great', 'a wonderful film', 'stock prices fell']) embTexts.push({ source: 'custom', text: t });
  const the128 = Array(128).fill('the').join(' ');
  for (const t of [' ', '\n', 'a  b', 'I love it \ud83d\ude00', the128, the128 + ' movie']) embTexts.push({ source: 'edge', text: t });
  for (let i = 0; i < 50; i++) {
    const e = d.spam[i * 120];
    embTexts.push({ source: 'spam', text: ds.cutAtSpace(e.body, 2000) });
  }
  const byGenre = {};
  for (const doc of d.brown) (byGenre[doc.genre] = byGenre[doc.genre] || []).push(doc);
  for (const g of Object.keys(byGenre).sort()) {
    const docs = byGenre[g];
    for (const doc of [docs[0], docs[docs.length - 1]]) embTexts.push({ source: 'brown', text: ds.brownPassage(doc) });
  }
  if (embTexts.length !== 200) throw new Error(`embeddings: ${embTexts.length} texts`);
  if (enc(the128).length !== 128 || enc(the128 + ' movie').length !== 129) throw new Error('128-token edge texts');

  const emb = [];
  const t0 = Date.now();
  for (const e of embTexts) {
    const [v] = await model.embed([e.text]);
    emb.push({ source: e.source, text: e.text, ids: enc(e.text), embedding: v.map(f32) });
  }
  const t1 = Date.now();
  // batch of 32 (file order) against batch of 1
  let maxDiff32 = 0;
  for (let i = 0; i < emb.length; i += 32) {
    const chunk = emb.slice(i, i + 32);
    const out = await model.embed(chunk.map((e) => e.text));
    if (out.length !== chunk.length) throw new Error('batch dropped rows');
    out.forEach((v, j) => v.forEach((x, k) => { maxDiff32 = Math.max(maxDiff32, Math.abs(Math.fround(x) - Math.fround(chunk[j].embedding[k]))); }));
  }
  // the 129-token text embeds as its first 128 tokens
  const e128 = emb.find((e) => e.text === the128).embedding;
  const e129 = emb.find((e) => e.text === the128 + ' movie').embedding;
  const diff128 = Math.max(...e128.map((x, k) => Math.abs(x - e129[k])));

  // ---- write ----
  fs.mkdirSync(path.dirname(OUT_TOKENS), { recursive: true });
  fs.writeFileSync(OUT_TOKENS, tok.map(jsonLine).join('\n') + '\n');
  fs.writeFileSync(OUT_EMB, emb.map(jsonLine).join('\n') + '\n');
  const imdb = d.imdb.map((r) => r.text);
  for (const t of imdb) if (/[\n\r]/.test(t)) throw new Error('imdb sentence with a line break');
  fs.mkdirSync(path.dirname(OUT_IMDB), { recursive: true });
  fs.writeFileSync(OUT_IMDB, imdb.join('\n') + '\n');

  const count = (arr) => arr.reduce((m, e) => ((m[e.source] = (m[e.source] || 0) + 1), m), {});
  const longer = (src) => emb.filter((e) => e.source === src && e.ids.length > 128).length;
  console.log(JSON.stringify({
    versions,
    tokens: { total: tok.length, by_source: count(tok), bytes: fs.statSync(OUT_TOKENS).size },
    embeddings: {
      total: emb.length, by_source: count(emb), bytes: fs.statSync(OUT_EMB).size,
      over_128_tokens: { spam: longer('spam'), brown: longer('brown'), edge: longer('edge') },
      batch1_seconds: (t1 - t0) / 1000,
      max_abs_diff_batch1_vs_batch32: maxDiff32,
      max_abs_diff_128_vs_129_tokens: diff128,
    },
    skipped,
  }, null, 1));
}

main().catch((e) => { console.error(e); process.exit(1); });
