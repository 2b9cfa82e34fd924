// Reference run of face-api's age/gender and expression nets with face-api's own code.
//
// Why: refacex rewrites face-api's architecture as a graph, converts it to ONNX and
// re-implements its preprocessing (refacex/faces/attributes.py). This runs the original:
// face-api's node build (dist/face-api.node.js) on the pure-JS @tensorflow/tfjs CPU
// backend (face-api's build asks for @tensorflow/tfjs-node, a native addon; the same
// API is served by @tensorflow/tfjs, so that name is redirected), crop included
// (extractFaceTensors), so the whole path from image + box to numbers is checked.
// Driven by scripts/check_faceapi_tfjs.py, which explains the setup.
//
//   node scripts/check_faceapi_tfjs.mjs TFJS_DIR MODEL_DIR JOB.json OUT.json [INPUTS.f32]
//
// TFJS_DIR: a folder where `npm install @tensorflow/tfjs @vladmandic/face-api` was run
// (outside the repo). MODEL_DIR: holds the face-api weight manifests and shards.
// JOB.json: [{"rgb": "file of H*W*3 uint8 RGB", "h": H, "w": W, "boxes": [[x, y, w, h]]}].
// OUT.json: per box {age, p_male, expressions: [7 probs]}. INPUTS.f32: the 112x112x3
// float32 batch tensors face-api built (before mean/255), to check the crop alone.
import Module, { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const [tfjsDir, modelDir, jobPath, outPath, inputsPath] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(tfjsDir), 'package.json'));
const tfjsMain = require.resolve('@tensorflow/tfjs');
const resolveFilename = Module._resolveFilename;
Module._resolveFilename = function redirect(request, ...rest) {
  return resolveFilename.call(this, request === '@tensorflow/tfjs-node' ? tfjsMain : request, ...rest);
};
const faceapi = require('@vladmandic/face-api');
const { tf } = faceapi;
await tf.setBackend('cpu');

function weightMap(name) {
  const manifest = JSON.parse(readFileSync(path.join(modelDir, `${name}-weights_manifest.json`), 'utf8'));
  const buf = Buffer.concat(manifest.flatMap((g) => g.paths.map((p) => readFileSync(path.join(modelDir, p)))));
  const specs = manifest.flatMap((g) => g.weights);
  return tf.io.decodeWeights(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength), specs);
}

const ageGender = faceapi.nets.ageGenderNet;
ageGender.loadFromWeightMap(weightMap('age_gender_model'));
const expression = faceapi.nets.faceExpressionNet;
expression.loadFromWeightMap(weightMap('face_expression_model'));

const job = JSON.parse(readFileSync(jobPath, 'utf8'));
const results = [];
const inputs = [];
for (const item of job) {
  const rgb = readFileSync(item.rgb);
  const image = tf.tensor3d(Int32Array.from(rgb), [item.h, item.w, 3], 'int32');
  const rects = item.boxes.map(([x, y, w, h]) => new faceapi.Rect(x, y, w, h));
  const faces = await faceapi.extractFaceTensors(image, rects);
  for (const face of faces) {
    const ag = await ageGender.predictAgeAndGender(face);
    const ex = await expression.predictExpressions(face);
    const pMale = ag.gender === 'male' ? ag.genderProbability : 1 - ag.genderProbability;
    results.push({ age: ag.age, p_male: pMale, expressions: faceapi.FACE_EXPRESSION_LABELS.map((k) => ex[k]) });
    if (inputsPath) {
      const batch = (await faceapi.toNetInput(face)).toBatchTensor(112, true);
      inputs.push(Buffer.from((await batch.data()).buffer));
      batch.dispose();
    }
    face.dispose();
  }
  image.dispose();
}
writeFileSync(outPath, JSON.stringify(results));
if (inputsPath) writeFileSync(inputsPath, Buffer.concat(inputs));
console.log(`face-api ${faceapi.version} on tfjs ${tf.version.tfjs} backend ${tf.getBackend()}: ${results.length} faces`);
