// Reference run of a TF.js graph model with the pure-JS @tensorflow/tfjs CPU backend.
//
// Why: refacex converts HSE FaceRes from TF.js to ONNX with its own converter
// (refacex/faces/tfjs.py); this runs the *original* model with TensorFlow's own JS
// runtime so the conversion can be checked on identical inputs. Driven by
// scripts/check_faceres_tfjs.py, which explains the setup.
//
//   node scripts/check_faceres_tfjs.mjs TFJS_DIR MODEL_JSON OUTPUT_NODE IN.f32 N H W C OUT.f32
//
// TFJS_DIR: a folder where `npm install @tensorflow/tfjs` was run (outside the repo).
// IN.f32: N*H*W*C little-endian float32 (NHWC, already preprocessed); OUT.f32: the output.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const [tfjsDir, modelJson, outputNode, inPath, n, h, w, c, outPath] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(tfjsDir), 'package.json'));
const tf = require('@tensorflow/tfjs');

await tf.setBackend('cpu');
const model = JSON.parse(readFileSync(modelJson, 'utf8'));
const dir = path.dirname(modelJson);
const shards = model.weightsManifest.flatMap((g) => g.paths.map((p) => readFileSync(path.join(dir, p))));
const all = Buffer.concat(shards);
const graph = await tf.loadGraphModel(tf.io.fromMemory({
  modelTopology: model.modelTopology,
  weightSpecs: model.weightsManifest.flatMap((g) => g.weights),
  weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
  format: model.format,
  generatedBy: model.generatedBy,
  convertedBy: model.convertedBy,
  signature: model.signature,
}));

const raw = readFileSync(inPath);
const data = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
const x = tf.tensor4d(data, [Number(n), Number(h), Number(w), Number(c)]);
const y = graph.execute(x, outputNode);
const out = await y.data();
writeFileSync(outPath, Buffer.from(out.buffer, out.byteOffset, out.byteLength));
console.log(`tfjs ${tf.version.tfjs} backend ${tf.getBackend()}: ${outputNode} ${y.shape}`);
