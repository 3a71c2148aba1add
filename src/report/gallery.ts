/**
 * Prototype galleries: for the largest clusters of a clustering, the training images whose features lie nearest to
 * the cluster's centroid (the smallest of k-means' squared distances among its members), as small PNGs.
 */
import { encode } from "fast-png";
import type { HostDataset } from "../data/dataset.ts";
import type { ClusteringView } from "./data.ts";

export interface GalleryOptions {
  /** Clusters shown per clustering: the largest ones. */
  readonly clusters: number;
  /** Images shown per cluster: the nearest to its centroid. */
  readonly images: number;
  /** Larger images are shrunk (box filter, whole factor) to at most this side, to keep the page small. */
  readonly maxSide: number;
}

export const GALLERY_DEFAULTS: GalleryOptions = { clusters: 8, images: 8, maxSide: 64 };

export interface GalleryImage {
  /** Index in the training set. */
  readonly index: number;
  readonly label: number;
  /** Squared distance of its feature to the centroid. */
  readonly distance: number;
  readonly png: Uint8Array;
}

export interface GalleryCluster {
  readonly cluster: number;
  readonly size: number;
  readonly phi: number;
  /** The most frequent label among all the cluster's members, and how many members have it. */
  readonly majority: { readonly label: number; readonly count: number } | undefined;
  readonly images: ReadonlyArray<GalleryImage>;
}

/** Members of each of K clusters. */
export const clusterSizes = (im2cluster: ArrayLike<number>, k: number): Int32Array<ArrayBuffer> => {
  const sizes = new Int32Array(k);
  for (let i = 0; i < im2cluster.length; i++) sizes[im2cluster[i]!]! += 1;
  return sizes;
};

/** The `count` largest non-empty clusters, largest first; ties go to the smaller cluster id. */
export const largestClusters = (sizes: ArrayLike<number>, count: number): number[] =>
  Array.from({ length: sizes.length }, (_, c) => c)
    .filter((c) => sizes[c]! > 0)
    .sort((a, b) => sizes[b]! - sizes[a]! || a - b)
    .slice(0, count);

/**
 * For each cluster in `clusters`, its `count` members of smallest distance, nearest first (ties: smaller index).
 * One pass over the N assignments whatever the number of clusters asked for.
 */
export const nearestMembers = (
  im2cluster: ArrayLike<number>,
  distances: ArrayLike<number>,
  clusters: readonly number[],
  count: number,
): number[][] => {
  const slot = new Map(clusters.map((c, i) => [c, i]));
  const members: number[][] = clusters.map(() => []);
  for (let i = 0; i < im2cluster.length; i++) {
    const s = slot.get(im2cluster[i]!);
    if (s !== undefined) members[s]!.push(i);
  }
  return members.map((m) => m.sort((a, b) => distances[a]! - distances[b]! || a - b).slice(0, count));
};

/** Image `index` of an NCHW u8 dataset as PNG bytes (grey or RGB), shrunk by a whole factor to `maxSide` at most. */
export const imagePng = (host: HostDataset, index: number, maxSide: number): Uint8Array => {
  const { channels: c, height: h, width: w } = host.info;
  const f = Math.max(1, Math.ceil(Math.max(h, w) / maxSide));
  const oh = Math.floor(h / f), ow = Math.floor(w / f);
  const plane = h * w, base = index * c * plane;
  const data = new Uint8Array(oh * ow * c);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      for (let ch = 0; ch < c; ch++) {
        let sum = 0;
        for (let dy = 0; dy < f; dy++) {
          const row = base + ch * plane + (y * f + dy) * w + x * f;
          for (let dx = 0; dx < f; dx++) sum += host.images[row + dx]!;
        }
        data[(y * ow + x) * c + ch] = Math.round(sum / (f * f)); // PNG wants pixels interleaved (HWC)
      }
    }
  }
  return encode({ width: ow, height: oh, data, channels: c, depth: 8 });
};

/** The gallery of one clustering. */
export const prototypeGallery = (
  host: HostDataset,
  view: ClusteringView,
  options: GalleryOptions = GALLERY_DEFAULTS,
): GalleryCluster[] => {
  const distances = view.distances;
  if (distances === undefined) return [];
  const sizes = clusterSizes(view.im2cluster, view.k);
  const shown = largestClusters(sizes, options.clusters);
  const nearest = nearestMembers(view.im2cluster, distances, shown, options.images);
  const labelCounts = shown.map(() => new Map<number, number>());
  const slot = new Map(shown.map((c, i) => [c, i]));
  for (let i = 0; i < view.im2cluster.length; i++) {
    const s = slot.get(view.im2cluster[i]!);
    if (s === undefined) continue;
    const counts = labelCounts[s]!, label = host.labels[i]!;
    counts.set(label, (counts.get(label) ?? 0) + 1);
  }
  return shown.map((cluster, s) => {
    let majority: GalleryCluster["majority"];
    for (const [label, count] of labelCounts[s]!) {
      if (majority === undefined || count > majority.count || (count === majority.count && label < majority.label)) {
        majority = { label, count };
      }
    }
    return {
      cluster,
      size: sizes[cluster]!,
      phi: view.phi[cluster]!,
      majority,
      images: nearest[s]!.map((index) => ({
        index,
        label: host.labels[index]!,
        distance: distances[index]!,
        png: imagePng(host, index, options.maxSide),
      })),
    };
  });
};
