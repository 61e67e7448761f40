// dlforge playground: images ⇄ V2 tensors, for the panels whose model takes or returns images as tensors
// (a denoiser: image → image; a GAN: seeds [+ class] → a grid of images). Loaded before app.js.
"use strict";

// A drawing canvas or an uploaded image → FP32 [1, C, H, W] in [0, 1] at the model's size, as PIL's
// L conversion does it (ITU-R 601-2 luma) for one channel. `noise` (0..1) adds Gaussian noise, clipped.
function imageToTensor(source, shape, noise = 0) {
  const [, channels, height, width] = shape;
  const small = document.createElement("canvas");
  small.width = width;
  small.height = height;
  const ctx = small.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, 0, 0, width, height);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const data = new Array(channels * height * width);
  for (let p = 0; p < height * width; p++) {
    const [r, g, b] = [rgba[4 * p], rgba[4 * p + 1], rgba[4 * p + 2]];
    const values = channels === 1 ? [(r * 299 + g * 587 + b * 114) / 1000] : [r, g, b];
    values.forEach((v, c) => {
      const noisy = v / 255 + (noise ? noise * gaussian() : 0);
      data[c * height * width + p] = Math.min(1, Math.max(0, noisy));
    });
  }
  return data;
}

function gaussian() {  // Box–Muller
  const u = 1 - Math.random(), v = Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

// One image of a flat [n, C, H, W] tensor (values in `range`) drawn at (x, y), each pixel `scale`×`scale`.
function drawTensorImage(ctx, data, index, shape, range, x, y, scale) {
  const [, channels, height, width] = shape;
  const [low, high] = range;
  const tile = new ImageData(width, height);
  const size = channels * height * width;
  for (let p = 0; p < height * width; p++) {
    for (let c = 0; c < 3; c++) {
      const value = data[index * size + Math.min(c, channels - 1) * height * width + p];
      tile.data[4 * p + c] = Math.round(255 * Math.min(1, Math.max(0, (value - low) / (high - low))));
    }
    tile.data[4 * p + 3] = 255;
  }
  const small = document.createElement("canvas");
  small.width = width;
  small.height = height;
  small.getContext("2d").putImageData(tile, 0, 0);
  ctx.imageSmoothingEnabled = false;  // pixels stay pixels: these models work on tiny images
  ctx.drawImage(small, x, y, width * scale, height * scale);
}

// Every image of a flat [n, C, H, W] tensor as a grid on `canvas`, as large as fits `maxSide` pixels.
function drawTensorGrid(canvas, data, shape, range, maxSide = 360) {
  const [n, , height, width] = shape;
  const columns = Math.ceil(Math.sqrt(n)), rows = Math.ceil(n / columns), gap = 2;
  const scale = Math.max(1, Math.floor((maxSide - gap * columns) / (columns * Math.max(width, height))));
  canvas.width = columns * (width * scale + gap);
  canvas.height = rows * (height * scale + gap);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < n; i++) {
    const [row, column] = [Math.floor(i / columns), i % columns];
    drawTensorImage(ctx, data, i, shape, range, column * (width * scale + gap), row * (height * scale + gap), scale);
  }
}
