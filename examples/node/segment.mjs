// Segment a PNG with a baked segkit model (segkit export RUN --bake), no segkit or Python:
//   npm install && node segment.mjs RUN/export/onnx/model-baked.onnx photo.png classes.png
// The model takes the image's own pixels at its own size; classes.png gets one class index
// per pixel (grey level = class index; model-baked.json beside the model names the classes).
import { readFileSync, writeFileSync } from "node:fs";
import * as ort from "onnxruntime-web";
import pngjs from "pngjs";

const [modelPath, imagePath, outPath] = process.argv.slice(2);
const png = pngjs.PNG.sync.read(readFileSync(imagePath)); // RGBA, 8 bits a channel
const { width, height } = png;
const rgb = new Uint8Array(width * height * 3);
for (let i = 0; i < width * height; i++) {
  rgb.set(png.data.subarray(4 * i, 4 * i + 3), 3 * i); // drop alpha
}

ort.env.wasm.numThreads = 1;
const session = await ort.InferenceSession.create(readFileSync(modelPath));
const image = new ort.Tensor("uint8", rgb, [height, width, 3]);
const { classes } = await session.run({ image }); // uint8 [height, width]

const out = new pngjs.PNG({ width, height });
for (let i = 0; i < width * height; i++) {
  out.data.fill(classes.data[i], 4 * i, 4 * i + 3);
  out.data[4 * i + 3] = 255;
}
writeFileSync(outPath, pngjs.PNG.sync.write(out));
const counts = {};
for (const c of classes.data) counts[c] = (counts[c] || 0) + 1;
console.log(JSON.stringify({ width, height, pixels_per_class: counts }));
