/* captum-shallow explorer: layer maps and their fusion, recomputed in the page.
 * No network and no dependency: the data is the JSON element of each explorer.
 * window.captumShallowExplorer.fuse() is captum_shallow.fuse_maps (tested
 * equal within 1e-3); .displayScaling() is captum_shallow.visualization's.
 */
(function () {
  "use strict";
  var VERSION = "3";
  if (window.captumShallowExplorer && window.captumShallowExplorer.version === VERSION) {
    return;
  }
  var FUSIONS = ["max", "mean", "product", "geometric"];
  var THUMB_WIDTH = 200;
  var THUMB_HEIGHT = 240;
  // Photos this much wider than high get one panel per row; this much higher, a height cap.
  var WIDE = 2.5;
  var TALL = 0.5;
  // Outline (and, with several classes present, tint) of each class position in the mask.
  var PALETTE = [
    [0, 229, 255], [255, 64, 160], [255, 214, 0], [80, 220, 100], [255, 140, 0], [170, 120, 255],
  ];

  // --- the maths of captum_shallow.fuse_maps ------------------------------------

  /** A 16-bit little-endian base64 map as {height, width, values} in [0, 1]. */
  function decodeMap(base64, height, width) {
    var bytes = atob(base64);
    var count = height * width;
    if (bytes.length !== 2 * count) {
      throw new Error("a map of " + height + "x" + width + " needs " + 2 * count + " bytes");
    }
    var values = new Float64Array(count);
    for (var i = 0; i < count; i++) {
      values[i] = (bytes.charCodeAt(2 * i) | (bytes.charCodeAt(2 * i + 1) << 8)) / 65535;
    }
    return { height: height, width: width, values: values };
  }

  /** Source indices and weights of torch's bilinear resize (align_corners=False). */
  function axis(from, to) {
    var scale = from / to;
    var low = new Int32Array(to);
    var high = new Int32Array(to);
    var weight = new Float64Array(to);
    for (var i = 0; i < to; i++) {
      var source = scale * (i + 0.5) - 0.5;
      if (source < 0) source = 0;
      var index = Math.floor(source);
      low[i] = index;
      high[i] = index < from - 1 ? index + 1 : index;
      weight[i] = source - index;
    }
    return { low: low, high: high, weight: weight };
  }

  /** F.interpolate(mode="bilinear", align_corners=False); a new array. */
  function resize(map, height, width) {
    if (map.height === height && map.width === width) {
      return { height: height, width: width, values: Float64Array.from(map.values) };
    }
    var rows = axis(map.height, height);
    var cols = axis(map.width, width);
    var source = map.values;
    var out = new Float64Array(height * width);
    for (var y = 0; y < height; y++) {
      var top = rows.low[y] * map.width;
      var bottom = rows.high[y] * map.width;
      var wy = rows.weight[y];
      for (var x = 0; x < width; x++) {
        var left = cols.low[x];
        var right = cols.high[x];
        var wx = cols.weight[x];
        out[y * width + x] =
          (1 - wy) * ((1 - wx) * source[top + left] + wx * source[top + right]) +
          wy * ((1 - wx) * source[bottom + left] + wx * source[bottom + right]);
      }
    }
    return { height: height, width: width, values: out };
  }

  /** Divide by the maximum in place; all zeros without a positive value. Returns the peak. */
  function normalise(values) {
    var peak = 0;
    for (var i = 0; i < values.length; i++) if (values[i] > peak) peak = values[i];
    if (peak > 0) for (var j = 0; j < values.length; j++) values[j] /= peak;
    else values.fill(0);
    return peak;
  }

  /** fuse_maps(maps, size, fusion, gamma, gate): upsample to the largest map, clamp at 0,
   * divide by the maximum, optionally tanh(gamma * M), combine, divide again; with a
   * gate map, multiply by the gate (upsampled, clamped at 0, divided by its maximum)
   * and divide again. */
  function fuse(maps, fusion, gamma, size, gate) {
    if (!maps.length) throw new Error("fuse needs at least one map");
    if (FUSIONS.indexOf(fusion) < 0) throw new Error("unknown fusion " + fusion);
    var height, width;
    if (size) {
      height = size[0];
      width = size[1];
    } else {
      var largest = maps[0];
      maps.forEach(function (m) {
        if (m.height * m.width > largest.height * largest.width) largest = m;
      });
      height = largest.height;
      width = largest.width;
    }
    var out = new Float64Array(height * width);
    out.fill(fusion === "max" ? -Infinity : fusion === "mean" ? 0 : 1);
    maps.forEach(function (m) {
      var v = resize(m, height, width).values;
      for (var i = 0; i < v.length; i++) if (!(v[i] > 0)) v[i] = 0;
      normalise(v);
      if (gamma !== null && gamma !== undefined) {
        for (var k = 0; k < v.length; k++) v[k] = Math.tanh(gamma * v[k]);
      }
      for (var j = 0; j < v.length; j++) {
        if (fusion === "max") out[j] = Math.max(out[j], v[j]);
        else if (fusion === "mean") out[j] += v[j];
        else out[j] *= v[j];
      }
    });
    for (var n = 0; n < out.length; n++) {
      if (fusion === "mean") out[n] /= maps.length;
      else if (fusion === "geometric") out[n] = Math.pow(out[n], 1 / maps.length);
    }
    normalise(out);
    if (gate) {
      var g = resize(gate, height, width).values;
      for (var q = 0; q < g.length; q++) if (!(g[q] > 0)) g[q] = 0;
      normalise(g);
      for (var r = 0; r < out.length; r++) out[r] *= g[r];
      normalise(out);
    }
    return { height: height, width: width, values: out };
  }

  /** captum_shallow.visualization.display_scaling. */
  function displayScaling(fusion, layers) {
    if (fusion === "product" && layers > 1) {
      return { exponent: 1 / layers, label: "shown as value^(1/" + layers + ") (geometric mean)" };
    }
    return { exponent: 1, label: "shown linearly" };
  }

  // --- drawing -------------------------------------------------------------------

  function decodeTable(base64) {
    var bytes = atob(base64);
    var table = new Uint8Array(bytes.length);
    for (var i = 0; i < bytes.length; i++) table[i] = bytes.charCodeAt(i);
    return table;
  }

  /** The map at a canvas's size, clamped at 0 and divided by its maximum. */
  function mapAt(map, height, width) {
    var values = resize(map, height, width).values;
    for (var i = 0; i < values.length; i++) if (!(values[i] > 0)) values[i] = 0;
    var peak = normalise(values);
    return peak > 0 ? values : null;
  }

  /** Matplotlib's lookup: index floor(v * 256), at most 255. */
  function colourIndex(value) {
    return Math.min(255, Math.floor(value * 256)) * 3;
  }

  function paintOverlay(canvas, pixels, values, exponent, opacity, table) {
    var ctx = canvas.getContext("2d");
    var image = ctx.createImageData(canvas.width, canvas.height);
    var d = image.data;
    var a = values ? opacity : 0;
    for (var i = 0, n = pixels.gray.length; i < n; i++) {
      var g = pixels.gray[i];
      var c = values ? colourIndex(exponent === 1 ? values[i] : Math.pow(values[i], exponent)) : 0;
      d[4 * i] = Math.round((1 - a) * g + a * table[c]);
      d[4 * i + 1] = Math.round((1 - a) * g + a * table[c + 1]);
      d[4 * i + 2] = Math.round((1 - a) * g + a * table[c + 2]);
      d[4 * i + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
  }

  /** IRN's rule (captum_shallow.segmentation.pseudo_masks): each pixel takes the argmax
   * over the background score t and the present classes' normalised maps, ties to the
   * first (the background, then the lower class position). `present` is a list of
   * {pos, values}; the label of a pixel is 0 (background) or 1 + its class position. */
  function irnLabels(present, threshold, n) {
    var labels = new Uint8Array(n);
    for (var i = 0; i < n; i++) {
      var best = threshold;
      var label = 0;
      for (var c = 0; c < present.length; c++) {
        var v = present[c].values[i];
        if (v > best) {
          best = v;
          label = present[c].pos + 1;
        }
      }
      labels[i] = label;
    }
    return labels;
  }

  /** The pseudo-mask: background dimmed, each class outlined in its colour (and tinted
   * when several are present). Returns the share of pixels of each label. */
  function paintMask(canvas, pixels, labels, tint) {
    var width = canvas.width;
    var height = canvas.height;
    var n = width * height;
    var counts = {};
    var ctx = canvas.getContext("2d");
    var image = ctx.createImageData(width, height);
    var d = image.data;
    for (var y = 0; y < height; y++) {
      for (var x = 0; x < width; x++) {
        var p = y * width + x;
        var label = labels[p];
        counts[label] = (counts[label] || 0) + 1;
        var rgb;
        if (!label) {
          var g = Math.round(0.3 * pixels.gray[p]);
          rgb = [g, g, g];
        } else {
          var colour = PALETTE[(label - 1) % PALETTE.length];
          if (
            (x > 0 && labels[p - 1] !== label) || (x < width - 1 && labels[p + 1] !== label) ||
            (y > 0 && labels[p - width] !== label) || (y < height - 1 && labels[p + width] !== label)
          ) {
            rgb = colour;
          } else if (tint) {
            rgb = [0, 1, 2].map(function (k) {
              return Math.round(0.6 * pixels.rgb[4 * p + k] + 0.4 * colour[k]);
            });
          } else {
            rgb = [pixels.rgb[4 * p], pixels.rgb[4 * p + 1], pixels.rgb[4 * p + 2]];
          }
        }
        d[4 * p] = rgb[0];
        d[4 * p + 1] = rgb[1];
        d[4 * p + 2] = rgb[2];
        d[4 * p + 3] = 255;
      }
    }
    ctx.putImageData(image, 0, 0);
    var shares = {};
    Object.keys(counts).forEach(function (label) { shares[label] = counts[label] / n; });
    return shares;
  }

  /** A photo's pixels at a size: RGBA and Captum's grey (the channels' mean). */
  function photoPixels(img, width, height) {
    var canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    var ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0, width, height);
    var rgb = ctx.getImageData(0, 0, width, height).data;
    var gray = new Float64Array(width * height);
    for (var i = 0; i < gray.length; i++) {
      gray[i] = (rgb[4 * i] + rgb[4 * i + 1] + rgb[4 * i + 2]) / 3;
    }
    return { rgb: rgb, gray: gray };
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function percent(value) {
    return (100 * value).toFixed(value < 0.001 ? 2 : 1) + " %";
  }

  /** A labelled range input in [0, 1]; `id` names its help text for aria-describedby. */
  function slider(label, className, value, step, help, id) {
    var wrap = el("label", "csx-control");
    var head = el("span", "csx-control-label", label + " ");
    var output = el("output", "csx-value");
    output.setAttribute("aria-hidden", "true"); // the input announces its own value
    head.appendChild(output);
    var input = el("input", className);
    input.type = "range";
    input.min = "0";
    input.max = "1";
    input.step = String(step);
    input.value = String(value);
    input.setAttribute("aria-label", label);
    wrap.appendChild(head);
    wrap.appendChild(input);
    if (help) {
      var note = el("span", "csx-help", help);
      note.id = id;
      input.setAttribute("aria-describedby", id);
      wrap.appendChild(note);
    }
    return { wrap: wrap, input: input, output: output };
  }

  function choice(label, className, options, value) {
    var wrap = el("label", "csx-control");
    wrap.appendChild(el("span", "csx-control-label", label));
    var select = el("select", className);
    options.forEach(function (option) {
      var node = el("option", "", option[1]);
      node.value = option[0];
      select.appendChild(node);
    });
    select.value = value;
    wrap.appendChild(select);
    return { wrap: wrap, select: select };
  }

  // --- one image -----------------------------------------------------------------

  function ImageView(explorer, data, number) {
    this.explorer = explorer;
    this.data = data;
    this.number = number;
    this.layers = explorer.data.layers;
    this.state = {
      classPos: data.initial,
      present: data.classes.map(function (cls, pos) { return pos === data.initial; }),
      presentChosen: false,
      view: "fused",
      enabled: this.layers.map(function () { return true; }),
      fusion: explorer.data.fusion,
      gated: Boolean(explorer.data.gate && explorer.data.classGate),
      opacity: explorer.data.opacity,
      threshold: explorer.data.threshold,
      scaling: "documented",
      foreground: 0,
    };
    this.cache = {};
    this.node = this.build();
  }

  ImageView.prototype.build = function () {
    var self = this;
    var data = this.data;
    var id = this.explorer.id + "-image-" + this.number;
    var section = el("section", "csx-image");
    section.id = id;
    section.dataset.image = String(this.number);
    section.setAttribute("aria-label", data.name);
    var aspect = data.width / data.height;
    if (aspect >= WIDE) section.classList.add("csx-wide");
    if (aspect <= TALL) section.classList.add("csx-tall");

    var head = el("header", "csx-head");
    head.appendChild(el("h2", "csx-name", data.name));
    var classes = el("div", "csx-classes");
    classes.setAttribute("role", "group");
    classes.setAttribute("aria-label", "class explained");
    this.classButtons = data.classes.map(function (cls, pos) {
      var button = el("button", "csx-class");
      button.type = "button";
      button.dataset.classPos = String(pos);
      button.title = "class " + cls.index;
      button.appendChild(el("span", "csx-class-name", cls.name));
      button.appendChild(el("span", "csx-class-p", percent(cls.probability)));
      var bar = el("span", "csx-class-bar");
      var fill = el("span", "");
      fill.style.width = Math.max(1, Math.round(100 * cls.probability)) + "%";
      bar.appendChild(fill);
      button.appendChild(bar);
      button.addEventListener("click", function () {
        self.state.classPos = pos;
        if (!self.state.presentChosen) {
          // Until a class is ticked present by hand, the mask is the shown class's.
          self.state.present = self.state.present.map(function (on, p) { return p === pos; });
        }
        self.update(true);
      });
      classes.appendChild(button);
      return button;
    });
    head.appendChild(classes);
    section.appendChild(head);

    var controls = el("div", "csx-controls");
    var opacity = slider("Overlay opacity", "csx-opacity", this.state.opacity, 0.05);
    var threshold = slider(
      "Background threshold t", "csx-threshold", this.state.threshold, 0.01,
      "background where every present class's normalised map ≤ t (IRN)", id + "-threshold-help"
    );
    var fusion = choice("Fusion of ticked layers", "csx-fusion",
      FUSIONS.map(function (f) { return [f, f]; }), this.state.fusion);
    var scaling = choice("Fused map colours", "csx-scaling", [
      ["documented", "as documented (value^(1/L) for a product of L maps, else linear)"],
      ["linear", "linear"],
    ], this.state.scaling);
    opacity.input.addEventListener("input", function () {
      self.state.opacity = Number(opacity.input.value);
      self.update(false);
    });
    threshold.input.addEventListener("input", function () {
      self.state.threshold = Number(threshold.input.value);
      self.update(false);
    });
    fusion.select.addEventListener("change", function () {
      self.state.fusion = fusion.select.value;
      self.update(true);
    });
    scaling.select.addEventListener("change", function () {
      self.state.scaling = scaling.select.value;
      self.update(true);
    });
    this.outputs = { opacity: opacity.output, threshold: threshold.output };
    [opacity, threshold, fusion, scaling].forEach(function (c) { controls.appendChild(c.wrap); });
    var gate = this.explorer.data.gate;
    if (gate) {
      var gateLabel = el("label", "csx-control csx-gate-control");
      this.gateToggle = el("input", "csx-gate");
      this.gateToggle.type = "checkbox";
      this.gateToggle.checked = this.state.gated;
      this.gateToggle.setAttribute("aria-label", "Gate by Grad-CAM at the deepest layer");
      this.gateToggle.addEventListener("change", function () {
        self.state.gated = self.gateToggle.checked;
        self.update(true);
      });
      var gateHead = el("span", "csx-control-label");
      gateHead.appendChild(this.gateToggle);
      gateHead.appendChild(document.createTextNode(" Gate by Grad-CAM at the deepest layer"));
      gateLabel.appendChild(gateHead);
      gateLabel.appendChild(el("span", "csx-help",
        "the fused map × Grad-CAM at " + gate.layer + " (" + gate.height + "×" + gate.width +
        "), as ShallowCAM(class_gate=True)"));
      controls.appendChild(gateLabel);
    }
    section.appendChild(controls);

    var panels = el("div", "csx-panels");
    var size = data.width + "×" + data.height + " px";
    this.photoCanvas = this.panel(panels, "csx-photo", "Photo · " + size);
    this.photoCanvas.setAttribute("aria-label", "Photo " + data.name + ", " + size);
    this.overlayCanvas = this.panel(panels, "csx-overlay", "");
    this.maskCanvas = this.panel(panels, "csx-mask", "");
    this.overlayCaption = this.overlayCanvas.parentNode.querySelector("figcaption");
    this.maskCaption = this.maskCanvas.parentNode.querySelector("figcaption");
    this.maskCanvas.parentNode.appendChild(this.presentBoxes());
    this.readout = el("div", "csx-readout", "point at the map to read its value");
    this.overlayCanvas.parentNode.appendChild(this.readout);
    this.overlayCanvas.parentNode.insertBefore(this.explorer.colorbar(), this.overlayCaption);
    this.overlayCanvas.addEventListener("mousemove", function (event) { self.read(event); });
    section.appendChild(panels);

    var maps = el("div", "csx-maps");
    maps.appendChild(el("h3", "csx-maps-title", "Maps · click one to view it, tick a layer to fuse it"));
    maps.appendChild(el("p", "csx-toggling", this.explorer.data.toggling));
    var thumbs = el("div", "csx-thumbs");
    this.thumbs = [this.thumb(thumbs, "fused", "Fused map")];
    this.toggles = [];
    this.layers.forEach(function (layer, k) {
      self.thumbs.push(self.thumb(thumbs, String(k), layer.name + " · " + layer.height + "×" + layer.width, k));
    });
    maps.appendChild(thumbs);
    section.appendChild(maps);
    return section;
  };

  /** A tick box per class: the classes present in the image, for the pseudo-mask. */
  ImageView.prototype.presentBoxes = function () {
    var self = this;
    var set = el("fieldset", "csx-present-set");
    set.appendChild(el("legend", "", "Classes present (pseudo-mask)"));
    this.presentToggles = this.data.classes.map(function (cls, pos) {
      var label = el("label", "csx-present-label");
      var box = el("input", "csx-present");
      box.type = "checkbox";
      box.checked = self.state.present[pos];
      box.dataset.classPos = String(pos);
      box.setAttribute("aria-label", cls.name + " is present");
      box.addEventListener("change", function () {
        self.state.present[pos] = box.checked;
        self.state.presentChosen = true;
        self.update(true);
      });
      var swatch = el("span", "csx-swatch");
      swatch.setAttribute("aria-hidden", "true");
      swatch.style.background = "rgb(" + PALETTE[pos % PALETTE.length].join(",") + ")";
      label.appendChild(box);
      label.appendChild(swatch);
      label.appendChild(document.createTextNode(cls.name));
      set.appendChild(label);
      return box;
    });
    return set;
  };

  ImageView.prototype.panel = function (parent, className, caption) {
    var figure = el("figure", "csx-panel");
    var canvas = el("canvas", className);
    canvas.setAttribute("role", "img");
    canvas.width = this.data.width;
    canvas.height = this.data.height;
    figure.appendChild(canvas);
    figure.appendChild(el("figcaption", "", caption));
    parent.appendChild(figure);
    return canvas;
  };

  ImageView.prototype.thumb = function (parent, view, caption, layer) {
    var self = this;
    var figure = el("figure", "csx-thumb");
    figure.dataset.view = view;
    var button = el("button", "csx-view");
    button.type = "button";
    button.setAttribute("aria-label", "Show " + (layer === undefined ? "the fused map" : "layer " + caption));
    var canvas = el("canvas", "");
    var aspect = this.data.width / this.data.height;
    canvas.width = Math.min(aspect >= WIDE ? 3 * THUMB_WIDTH : THUMB_WIDTH, this.data.width);
    canvas.height = Math.max(1, Math.round(canvas.width / aspect));
    if (canvas.height > THUMB_HEIGHT) {
      canvas.height = THUMB_HEIGHT;
      canvas.width = Math.max(1, Math.round(THUMB_HEIGHT * aspect));
    }
    canvas.setAttribute("aria-hidden", "true"); // the button names it
    button.appendChild(canvas);
    figure.appendChild(button);
    var text = el("figcaption", "");
    if (layer !== undefined) {
      var toggle = el("input", "csx-toggle");
      toggle.type = "checkbox";
      toggle.checked = true;
      toggle.dataset.layer = String(layer);
      toggle.title = "fuse this layer";
      toggle.setAttribute("aria-label", "Fuse layer " + caption);
      toggle.addEventListener("click", function (event) { event.stopPropagation(); });
      toggle.addEventListener("change", function () {
        self.state.enabled[layer] = toggle.checked;
        self.update(true);
      });
      var label = el("label", "csx-toggle-label");
      label.appendChild(toggle);
      label.appendChild(document.createTextNode(" " + caption));
      label.addEventListener("click", function (event) { event.stopPropagation(); });
      text.appendChild(label);
      this.toggles.push(toggle);
    } else {
      text.textContent = caption;
    }
    figure.appendChild(text);
    var select = function () {
      self.state.view = view;
      self.update(true);
    };
    figure.addEventListener("click", select); // the button, or anywhere on the card
    parent.appendChild(figure);
    return { figure: figure, button: button, canvas: canvas, caption: text, view: view, pixels: null };
  };

  /** Decoded layer maps of a class (cached). */
  ImageView.prototype.layerMaps = function (pos) {
    if (!this.cache[pos]) {
      var layers = this.layers;
      this.cache[pos] = this.data.classes[pos].maps.map(function (b64, k) {
        return decodeMap(b64, layers[k].height, layers[k].width);
      });
    }
    return this.cache[pos];
  };

  /** The decoded gate map of a class (cached), or null without one. */
  ImageView.prototype.gateMap = function (pos) {
    var gate = this.explorer.data.gate;
    if (!gate) return null;
    var key = "gate-" + pos;
    if (!this.cache[key]) this.cache[key] = decodeMap(this.data.classes[pos].gate, gate.height, gate.width);
    return this.cache[key];
  };

  /** The fused map of a class (default: the shown one) with the ticked layers, the
   * fusion chosen and, when ticked, the gate; null with no layer ticked. */
  ImageView.prototype.fusedMap = function (pos) {
    if (pos === undefined) pos = this.state.classPos;
    var maps = this.layerMaps(pos);
    var enabled = this.state.enabled;
    var chosen = maps.filter(function (m, k) { return enabled[k]; });
    if (!chosen.length) return null;
    var gate = this.state.gated ? this.gateMap(pos) : null;
    return fuse(chosen, this.state.fusion, this.explorer.data.gamma, null, gate);
  };

  ImageView.prototype.enabledCount = function () {
    return this.state.enabled.filter(Boolean).length;
  };

  ImageView.prototype.exponent = function () {
    if (this.state.scaling === "linear") return 1;
    return displayScaling(this.state.fusion, this.enabledCount()).exponent;
  };

  ImageView.prototype.viewMap = function (view, fused) {
    return view === "fused" ? fused : this.layerMaps(this.state.classPos)[Number(view)];
  };

  /** The present classes' maps as the pseudo-mask uses them: the view shown (fused or one
   * layer), upsampled to the photo and divided by the maximum; classes without a map
   * (no positive value, no layer ticked) are left out, as they can never win. */
  ImageView.prototype.presentMaps = function (shown) {
    var self = this;
    var state = this.state;
    var present = [];
    state.present.forEach(function (on, pos) {
      if (!on) return;
      var values;
      if (pos === state.classPos) {
        values = shown;
      } else {
        var map = state.view === "fused" ? self.fusedMap(pos) : self.layerMaps(pos)[Number(state.view)];
        values = map ? mapAt(map, self.data.height, self.data.width) : null;
      }
      if (values) present.push({ pos: pos, values: values });
    });
    return present;
  };

  /** Redraw; `maps` when the class, view, layers, fusion or scaling changed. */
  ImageView.prototype.update = function (maps) {
    if (!this.pixels) return; // the photo is still decoding; start() draws everything
    var self = this;
    var state = this.state;
    var explorer = this.explorer;
    var table = explorer.table;
    if (maps || !this.current) {
      var fused = this.fusedMap();
      var map = this.viewMap(state.view, fused);
      var values = map ? mapAt(map, this.data.height, this.data.width) : null;
      this.current = {
        fused: fused,
        values: values,
        present: this.presentMaps(values),
        exponent: state.view === "fused" ? this.exponent() : 1,
      };
      this.classButtons.forEach(function (button, pos) {
        button.setAttribute("aria-pressed", String(pos === state.classPos));
      });
      this.presentToggles.forEach(function (box, pos) { box.checked = state.present[pos]; });
      this.captions();
    }
    var current = this.current;
    var n = this.data.width * this.data.height;
    paintOverlay(this.overlayCanvas, this.pixels, current.values, current.exponent, state.opacity, table);
    current.labels = irnLabels(current.present, state.threshold, n);
    var shares = paintMask(this.maskCanvas, this.pixels, current.labels, current.present.length > 1);
    state.foreground = 1 - (shares[0] || 0);
    this.outputs.opacity.textContent = state.opacity.toFixed(2);
    this.outputs.threshold.textContent = state.threshold.toFixed(2);
    var mask;
    if (!current.present.length) {
      mask = state.present.some(Boolean)
        ? "Pseudo-mask · no map to threshold"
        : "Pseudo-mask · tick a class present";
    } else {
      mask = "Pseudo-mask at t = " + state.threshold.toFixed(2) + " · foreground " + percent(state.foreground);
      if (current.present.length === 1) {
        mask = mask.replace("Pseudo-mask", "Pseudo-mask of " + this.data.classes[current.present[0].pos].name);
      } else {
        mask += " (" + current.present.map(function (c) {
          return self.data.classes[c.pos].name + " " + percent(shares[c.pos + 1] || 0);
        }).join(", ") + ")";
      }
    }
    this.maskCaption.textContent = mask;
    this.maskCanvas.setAttribute("aria-label", mask);
    this.thumbs.forEach(function (thumb) {
      var map = self.viewMap(thumb.view, current.fused);
      var values = map ? mapAt(map, thumb.canvas.height, thumb.canvas.width) : null;
      var exponent = thumb.view === "fused" ? self.exponent() : 1;
      paintOverlay(thumb.canvas, thumb.pixels, values, exponent, state.opacity, table);
      thumb.figure.classList.toggle("csx-selected", thumb.view === state.view);
      thumb.button.setAttribute("aria-pressed", String(thumb.view === state.view));
      var layer = Number(thumb.view);
      thumb.figure.classList.toggle("csx-off", thumb.view !== "fused" && !state.enabled[layer]);
    });
  };

  ImageView.prototype.captions = function () {
    var state = this.state;
    var count = this.enabledCount();
    var text;
    if (state.view === "fused") {
      var scale = state.scaling === "linear"
        ? "shown linearly"
        : displayScaling(state.fusion, count).label;
      var gated = state.gated ? " · gated by Grad-CAM at " + this.explorer.data.gate.layer : "";
      text = count
        ? "Fused map · " + state.fusion + " of " + count + "/" + this.layers.length +
          " layers" + gated + " · " + this.current.fused.height + "×" + this.current.fused.width +
          " · " + scale
        : "Fused map · no layer ticked";
    } else {
      var layer = this.layers[Number(state.view)];
      text = "Layer " + layer.name + " · " + layer.height + "×" + layer.width + " · ÷ its maximum";
    }
    if (!this.current.values && count) text += " · no positive evidence";
    this.overlayCaption.textContent = text;
    this.overlayCanvas.setAttribute("aria-label", text);
    var fusedThumb = this.thumbs[0].caption;
    fusedThumb.textContent = "Fused map · " + state.fusion + " of " + count + (state.gated ? " · gated" : "");
  };

  ImageView.prototype.read = function (event) {
    var values = this.current && this.current.values;
    if (!values) return;
    var box = this.overlayCanvas.getBoundingClientRect();
    var x = Math.floor((event.clientX - box.left) * this.data.width / box.width);
    var y = Math.floor((event.clientY - box.top) * this.data.height / box.height);
    if (x < 0 || y < 0 || x >= this.data.width || y >= this.data.height) return;
    var label = this.current.labels[y * this.data.width + x];
    this.readout.textContent = "at (" + x + ", " + y + "): map " + values[y * this.data.width + x].toFixed(3) +
      " · mask: " + (label ? this.data.classes[label - 1].name : "background");
  };

  ImageView.prototype.start = function () {
    var self = this;
    var img = new Image();
    return new Promise(function (resolve, reject) {
      img.onload = function () {
        self.pixels = photoPixels(img, self.data.width, self.data.height);
        self.photoCanvas.getContext("2d").drawImage(img, 0, 0, self.data.width, self.data.height);
        self.thumbs.forEach(function (thumb) {
          thumb.pixels = photoPixels(img, thumb.canvas.width, thumb.canvas.height);
        });
        self.update(true);
        resolve();
      };
      img.onerror = function () { reject(new Error("cannot decode the photo of " + self.data.name)); };
      img.src = self.data.photo;
    });
  };

  // --- one explorer ----------------------------------------------------------------

  function Explorer(root) {
    this.id = root.id;
    this.root = root;
    this.data = JSON.parse(root.querySelector("script.csx-data").textContent);
    this.table = decodeTable(this.data.colormap.lut);
    var self = this;
    var app = el("div", "csx-app");
    app.appendChild(this.header());
    this.views = this.data.images.map(function (image, i) { return new ImageView(self, image, i); });
    this.views.forEach(function (view) { app.appendChild(view.node); });
    root.appendChild(app);
  }

  Explorer.prototype.header = function () {
    var data = this.data;
    var head = el("header", "csx-top");
    head.appendChild(el("h1", "csx-title", data.title));
    var settings = el("dl", "csx-settings");
    data.settings.forEach(function (pair) {
      settings.appendChild(el("dt", "", pair[0]));
      settings.appendChild(el("dd", "", pair[1]));
    });
    head.appendChild(settings);
    var help = el("details", "csx-about");
    help.appendChild(el("summary", "", "How to read this page"));
    [
      "Each map is upsampled to the photo and divided by its own maximum: the colour " +
        "bar reads every panel. A product of L maps is tiny except at a few pixels, so " +
        "the fused product is shown as value^(1/L), the geometric mean of its layers " +
        "(same ranking, visible extent); choose 'linear' to see its raw values.",
      "The fused map is recomputed here from the layer maps exactly as " +
        "captum_shallow.fuse_maps does: each map upsampled (bilinear) to the largest " +
        "one, clamped at 0, divided by its maximum, combined, divided again.",
      "The pseudo-mask follows IRN: the map of each class ticked as present (upsampled " +
        "to the photo, divided by its maximum) competes with a constant background " +
        "score t, and each pixel takes the highest (ties go to the background). With one " +
        "class present, a pixel is background where its map is at most t. t applies to " +
        "the map's values, not to its colours; it starts at the explainer's task default.",
    ].concat(data.gate ? [
      "With 'Gate by Grad-CAM at the deepest layer' ticked, the fused map is then " +
        "multiplied pixel by pixel by Grad-CAM at " + data.gate.layer + ", upsampled " +
        "(bilinear) to the fused map, clamped at 0 and divided by its maximum, and " +
        "divided by its maximum again, as ShallowCAM(class_gate=True) and " +
        "fuse_maps(..., gate=...) do: the layers give the detail, the deep map says " +
        "which of it is the class. Untick it to see the ungated fusion.",
    ] : []).forEach(function (text) { help.appendChild(el("p", "", text)); });
    head.appendChild(help);
    if (data.images.length > 1) {
      var nav = el("nav", "csx-nav");
      var id = this.id;
      data.images.forEach(function (image, i) {
        var link = el("a", "", image.name);
        link.href = "#" + id + "-image-" + i;
        nav.appendChild(link);
      });
      head.appendChild(nav);
    }
    return head;
  };

  Explorer.prototype.colorbar = function () {
    var wrap = el("div", "csx-colorbar");
    var canvas = el("canvas", "");
    canvas.width = 256;
    canvas.height = 1;
    var ctx = canvas.getContext("2d");
    var image = ctx.createImageData(256, 1);
    for (var i = 0; i < 256; i++) {
      image.data[4 * i] = this.table[3 * i];
      image.data[4 * i + 1] = this.table[3 * i + 1];
      image.data[4 * i + 2] = this.table[3 * i + 2];
      image.data[4 * i + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    wrap.appendChild(canvas);
    var ticks = el("div", "csx-ticks");
    ["0", "0.25", "0.5", "0.75", "1"].forEach(function (t) { ticks.appendChild(el("span", "", t)); });
    wrap.appendChild(ticks);
    wrap.appendChild(el("div", "csx-colorbar-label", this.data.colorbarLabel));
    return wrap;
  };

  Explorer.prototype.start = function () {
    var root = this.root;
    return Promise.all(this.views.map(function (view) { return view.start(); })).then(
      function () { root.dataset.ready = "true"; },
      function (error) {
        root.dataset.ready = "error";
        throw error;
      }
    );
  };

  /** The state of image i, for tests and the console. */
  Explorer.prototype.state = function (i) {
    var view = this.views[i];
    var cls = view.data.classes[view.state.classPos];
    var copy = JSON.parse(JSON.stringify(view.state));
    copy.classIndex = cls.index;
    copy.className = cls.name;
    copy.exponent = view.current ? view.current.exponent : 1;
    return copy;
  };

  /** The fused map image i shows now ({height, width, values}), or null. */
  Explorer.prototype.fusedMap = function (i) {
    var map = this.views[i].fusedMap();
    return map && { height: map.height, width: map.width, values: Array.from(map.values) };
  };

  /** The pseudo-mask image i shows now: {height, width, labels} (0: background,
   * 1 + p: the class at position p). */
  Explorer.prototype.mask = function (i) {
    var view = this.views[i];
    return { height: view.data.height, width: view.data.width, labels: Array.from(view.current.labels) };
  };

  /** The embedded gate map (÷ its maximum) for class position pos of image i, or null. */
  Explorer.prototype.gateMap = function (i, pos) {
    var map = this.views[i].gateMap(pos);
    return map && { height: map.height, width: map.width, values: Array.from(map.values) };
  };

  /** Layer k's embedded map (÷ its maximum) for class position pos of image i. */
  Explorer.prototype.layerMap = function (i, pos, k) {
    var map = this.views[i].layerMaps(pos)[k];
    return { height: map.height, width: map.width, values: Array.from(map.values) };
  };

  window.captumShallowExplorer = {
    version: VERSION,
    fusions: FUSIONS.slice(),
    instances: {},
    fuse: fuse,
    resize: resize,
    displayScaling: displayScaling,
    /** Build the explorer inside the element with this id (once). */
    mount: function (id) {
      var root = document.getElementById(id);
      if (!root || this.instances[id]) return this.instances[id];
      var explorer = new Explorer(root);
      this.instances[id] = explorer;
      explorer.start().catch(function (error) {
        console.error("captum-shallow explorer: " + error.message);
      });
      return explorer;
    },
  };
})();
