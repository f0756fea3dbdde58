'use strict';
// Writes sp_js_cases.jsonl: token ids from the reference JS tokenizer
// (@energetic-ai/embeddings 0.2.0, EmbeddingsModel.tokenizer) for the
// tricky texts below and for seeded random texts, under two vocabularies:
// "use-lite" (testdata/use-lite/vocab.json) and "toy" (sp_toy_vocab.json,
// which has pieces beyond the BMP, null scores, a duplicate piece and
// characters that only start longer pieces).
//
//   node model/tokenizer/testdata/gen_sp_cases.js
//
// The library is resolved from scripts/reference (npm ci there first).
// Output is deterministic.
const fs = require('fs');
const path = require('path');

const HERE = __dirname;
const ROOT = path.resolve(HERE, '..', '..', '..');
const lib = require(require.resolve('@energetic-ai/embeddings', { paths: [path.join(ROOT, 'scripts', 'reference')] }));

function tokenizer(vocabPath) {
  const vocab = JSON.parse(fs.readFileSync(vocabPath, 'utf8'));
  // The model is not needed to tokenize.
  return { vocab, tok: new lib.EmbeddingsModel({ vocabulary: vocab, model: null }).tokenizer };
}

let seed = 12345;
function rnd() { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; }
function pick(a) { return a[Math.floor(rnd() * a.length)]; }
function rep(s, n) { return s.repeat(n); }

const tricky = [
  '', ' ', '  ', '   ', '.', ':', ':)', ' :)', ' :) ', ':(', ':-)', '):', '://', 'http://x.org', ':00', 'at 10:00',
  '\u201d5', '\u201d5\u201d5', 'Hello world', 'Hello, World!', ' leading', 'trailing ', '  both  ',
  'a  b', 'a   b', '\t', '\n', '\t\n', 'a\tb\nc', '\r\n', '\u2028', 'a\u2028b', '\u0085', '\u00a0', 'a\u00a0b',
  '\u3000', '\u2003', '\u200b', '\ufeff', '\u0000',
  '\ud83d\ude00', '\ud83d\ude00\ud83d\ude00', 'I love it \ud83d\ude00\ud83d\udc4d', 'a\ud83d\ude00b',
  '\ud83d\udc4d\ud83c\udffd', '\ud83c\uddeb\ud83c\uddf7', '\u2764\ufe0f', '\ud835\udc00\ud835\udc01',
  '\u4e2d\u6587', '\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8', '\ud55c\uad6d\uc5b4', '\u1100\u1161\u11a8',
  'caf\u00e9', 'cafe\u0301', 'A\u030a', '\u00c5', 'na\u00efve', 'e' + rep('\u0301', 40), 'x' + rep('\u0308', 31) + '\u0316',
  'a' + rep('\u0323\u0301', 20) + 'b', '\ufdfa', '\ufdfa' + rep('\u064e', 35),
  '\ufb01ne', '\ufb02ow', '\uff21\uff22\uff23', '\uff11\uff12\uff13', '\u2460', '\u338f', '\u00bd', '\u216b', '\u2122', '\u2026',
  '\u0130stanbul', '\u03a3\u039f\u03a3', 'stra\u00dfe', '\u01c5', '\ua7f1', '\ud833\udcd6\ud833\udcf3',
  'Na\u00efve r\u00e9sum\u00e9 co\u00f6perate', 'pneumonoultramicroscopicsilicovolcanoconiosis',
  rep('a', 300), rep('supercalifragilistic', 20), rep(' ', 20), rep('\ud83d\ude00', 10) + ' ok',
  // characters new since Unicode 15.0: marks with a combining class, composites
  'e\u{10efa}\u0301', 'e\u0301\u{10efa}', 'a\u0301\u{1add}\u0304', '\u0915\u{113ce}\u094d\u0902',
  '\u{105d2}\u0307\u0304\u{113d0}\u0897\u094d', '\u{105c9}\u0304', '\u{16d67}\u{16d67}\u0301', '\ua7f1\u0301',
  '\u0915\u094d\u0937', '\u0627\u0644\u0639\u0631\u0628\u064a\u0629', '\u05e9\u05dc\u05d5\u05dd',
  'The quick brown fox jumps over the lazy dog.', "It's 5 o'clock -- isn't it?", '$100.00 (approx.)',
];

const lite = tokenizer(path.join(ROOT, 'testdata', 'use-lite', 'vocab.json'));
const toy = tokenizer(path.join(HERE, 'sp_toy_vocab.json'));

function randText(pieces, extra) {
  const k = Math.floor(rnd() * 16);
  let s = '';
  for (let i = 0; i < k; i++) {
    const r = rnd();
    if (r < 0.5) s += pick(pieces);
    else if (r < 0.8) s += pick(extra);
    else if (r < 0.9) s += ' ';
    else {
      let cp;
      do { cp = Math.floor(rnd() * (rnd() < 0.6 ? 0x3000 : 0x110000)); } while (cp >= 0xd800 && cp <= 0xdfff);
      s += String.fromCodePoint(cp);
    }
  }
  return s;
}

const extra = [' ', '  ', '\t', '\n', '\u00a0', '\u3000', '\u2028', '\ufb01', '\uff21', '\u2460', '\ud83d\ude00', '\u4e2d',
  '\u0301', '\u0323', 'e\u0301', ':', ':)', '://', ':00', '\u201d5', '\u0130', '\ud833\udcd6'];
const litePieces = lite.vocab.slice(6).map((e) => e[0].replace(/\u2581/g, ' '));
const toyPieces = toy.vocab.slice(6).map((e) => e[0].replace(/\u2581/g, ' '));
const toyExtra = ['a', 'b', 'c', 'd', 'e', 'x', 'y', 'z', ' ', '\ud83d\ude00', '\ud835\udc00', 'e\u0301', '\ufb01', 'fi'];

const lines = [];
function add(name, t, text) { lines.push(JSON.stringify({ vocab: name, text, ids: t.tok.encode(text) })); }
for (const t of tricky) add('use-lite', lite, t);
for (let i = 0; i < 400; i++) add('use-lite', lite, randText(litePieces, extra));
for (const t of ['', ' ', 'a', 'ab', 'cde', 'cd', 'c', 'xy', 'x', ':', '\ud83d\ude00', '\ud83d\ude00b', 'a\ud83d\ude00b',
  '\ud835\udc00\ud835\udc00', '\ud835\udc00\ud835\udc00\ud835\udc00', 'a\ud835\udc00\ud835\udc00b', '\ufb01', 'fi', 'e\u0301', 'zz zz']) {
  add('toy', toy, t);
}
for (let i = 0; i < 300; i++) add('toy', toy, randText(toyPieces, toyExtra));

// Escape invisible and line-breaking characters so that every line reader sees one case a line.
const out = lines.map((l) => l.replace(/[\u007f-\u00a0\u00ad\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\ufeff]/g,
  (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')));
fs.writeFileSync(path.join(HERE, 'sp_js_cases.jsonl'), out.join('\n') + '\n');
console.log(`wrote ${lines.length} cases`);
