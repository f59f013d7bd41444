// Entities from raw text with the one-file ONNX model of `runassist export RUN --with-tokenizer`.
//
// The graph does the whole job: the word split of `runassist predict`, WordPiece, the model, each
// word's tag and the entities with their offsets. What is left to a caller, in any language:
//   1. turn the text into its Unicode code points (int32) -- the graph's one input, `codepoints`;
//   2. run the session; read entity_start/entity_end (code-point offsets, [start, end)),
//      entity_label (an index into names.entity_label of model.with_tokenizer.json) and entity_score.
// In Java: text.codePoints().toArray(); C#: text.EnumerateRunes(); Rust: text.chars().map(|c| c as i32).
// Offsets count code points, as Python's do; JavaScript strings index UTF-16 units, so the entity
// text is cut from Array.from(text) (code points), not with text.slice.
//
// As a library:  const m = await load('model.with_tokenizer.onnx'); await m.entities('text')
// As a program:  node ner_with_tokenizer.js MODEL.onnx [--threads N] < texts.jsonl > entities.jsonl
//   (one JSON string per input line; one {"entities": [...]} per output line; timing on stderr)
// onnxruntime-node (npm) must be resolvable: install it beside this file or set NODE_PATH.
'use strict';
const fs = require('fs');
const readline = require('readline');
const ort = require('onnxruntime-node');

async function load(modelPath, { threads = 1 } = {}) {
  const info = JSON.parse(fs.readFileSync(modelPath.replace(/\.onnx$/, '.json'), 'utf8'));
  const session = await ort.InferenceSession.create(modelPath, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionProviders: ['cpu'], enableMemPattern: false,
  });
  async function entities(text) {
    const chars = Array.from(text);  // code points, as strings
    const codepoints = Int32Array.from(chars, (c) => c.codePointAt(0));
    const out = await session.run({ codepoints: new ort.Tensor('int32', codepoints, [codepoints.length]) });
    const starts = out.entity_start.data, ends = out.entity_end.data;
    const labels = out.entity_label.data, scores = out.entity_score.data;
    const found = [];
    for (let i = 0; i < starts.length; i++) {
      const start = Number(starts[i]), end = Number(ends[i]);
      found.push({ label: info.names.entity_label[Number(labels[i])], start, end,
                   text: chars.slice(start, end).join(''), score: Math.round(scores[i] * 1e4) / 1e4 });
    }
    return found;
  }
  return { entities, info, session };
}

async function main(argv) {
  const modelPath = argv[0];
  const t = argv.indexOf('--threads');
  const model = await load(modelPath, { threads: t >= 0 ? Number(argv[t + 1]) : 1 });
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  const out = [];
  let n = 0, seconds = 0;
  for await (const line of lines) {
    if (!line.trim()) continue;
    const item = JSON.parse(line);
    const text = typeof item === 'string' ? item : item.text;
    const t0 = process.hrtime.bigint();
    const entities = await model.entities(text);
    seconds += Number(process.hrtime.bigint() - t0) / 1e9;
    n += 1;
    out.push(JSON.stringify({ entities }));
  }
  process.stdout.write(out.length ? out.join('\n') + '\n' : '');
  process.stderr.write(JSON.stringify({ texts: n, seconds, texts_per_second: n / (seconds || 1e-9) }) + '\n');
}

module.exports = { load };
if (require.main === module) {
  main(process.argv.slice(2)).catch((e) => { process.stderr.write(`error: ${e.message}\n`); process.exit(1); });
}
