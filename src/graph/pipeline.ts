import { type AnyStage, checkName, type Stage } from "./stage.ts";
import { GraphDefinitionError } from "./errors.ts";

/** The run's input, as a dependency: a `Pipeline`'s first stage reads it, and so can any `Dag` node. */
export const INPUT = "input";

/**
 * One stage in a graph. `deps` are node names (or `INPUT`); a node that `receives: "value"` gets its single dep's
 * output as is (linear pipelines), one that `receives: "record"` gets `{ [dep]: output }` (fan-in).
 */
export interface Node {
  readonly stage: AnyStage;
  readonly deps: ReadonlyArray<string>;
  readonly receives: "value" | "record";
}

/**
 * `N` itself, or (when `N` is already taken) a string literal that `N` does not match, so that a duplicate name is a
 * compile error that says so. It sits in the name slot of `Stage`, not in an intersection, so that an inline
 * `stage(...)` argument still gets its input type from context. Names that are not literals (`string`), or taken
 * names that are not known, are checked at runtime only.
 */
type Fresh<N extends string, Taken> = string extends N | Taken ? N
  : N extends Taken ? `stage name '${N}' is already used`
  : N;

/**
 * What the runner runs: nodes in an order where every dep comes before its dependents (the builders only let a node
 * name deps that already exist, so insertion order is topological and a cycle cannot be written). The output of a
 * plan is the output of its last node.
 */
export abstract class Plan<in I, out O, out E, out R> {
  declare readonly "~types": { readonly in: (input: I) => void; readonly out: O; readonly E: E; readonly R: R };
  protected constructor(readonly nodes: ReadonlyArray<Node>) {}

  get names(): ReadonlyArray<string> {
    return this.nodes.map((n) => n.stage.name);
  }

  /** `name` and every node that transitively depends on it, in run order. */
  downstreamOf(name: string): ReadonlyArray<string> {
    const hit = new Set([name]);
    for (const n of this.nodes) if (n.deps.some((d) => hit.has(d))) hit.add(n.stage.name);
    return this.names.filter((x) => hit.has(x));
  }

  /** A Mermaid flowchart of the nodes and their data edges (for the README and `--describe` style output). */
  toMermaid(): string {
    const id = new Map([INPUT, ...this.names].map((name, i) => [name, `n${i}`]));
    const usesInput = this.nodes.some((n) => n.deps.includes(INPUT));
    const lines = ["flowchart LR"];
    if (usesInput) lines.push(`  n0(["${INPUT}"])`);
    for (const n of this.nodes) lines.push(`  ${id.get(n.stage.name)}["${n.stage.name}"]`);
    for (const n of this.nodes) for (const d of n.deps) lines.push(`  ${id.get(d)} --> ${id.get(n.stage.name)}`);
    return lines.join("\n");
  }

  protected static append(nodes: ReadonlyArray<Node>, node: Node): ReadonlyArray<Node> {
    const name = node.stage.name;
    checkName("stage", name);
    if (name === INPUT || nodes.some((n) => n.stage.name === name)) {
      throw new GraphDefinitionError({ message: `stage name '${name}' is already used (or reserved)` });
    }
    for (const d of node.deps) {
      if (d !== INPUT && !nodes.some((n) => n.stage.name === d)) {
        throw new GraphDefinitionError({
          message: `stage '${name}' depends on '${d}', which is not defined before it`,
        });
      }
    }
    return [...nodes, node];
  }
}

/**
 * A linear chain: each stage's input is the previous stage's output, so `then` only accepts a stage whose input type
 * the previous output satisfies. `Names` collects the literal stage names so that a duplicate is a compile error;
 * `Pipeline<I, O>` (names unknown, `string`) accepts any pipeline from `I` to `O`.
 */
export class Pipeline<in I, out O, out E = never, out R = never, out Names extends string = string>
  extends Plan<I, O, E, R> {
  declare readonly "~names": Names;

  static from<I, O, E, R, const N extends string>(
    first: Stage<I, O, E, R, Fresh<N, typeof INPUT>>,
  ): Pipeline<I, O, E, R, typeof INPUT | N> {
    return new Pipeline(Plan.append([], { stage: first as AnyStage, deps: [INPUT], receives: "value" }));
  }

  then<O2, E2, R2, const N extends string>(
    next: Stage<O, O2, E2, R2, Fresh<N, Names>>,
  ): Pipeline<I, O2, E | E2, R | R2, Names | N> {
    const prev = this.nodes[this.nodes.length - 1].stage.name;
    return new Pipeline(Plan.append(this.nodes, { stage: next as AnyStage, deps: [prev], receives: "value" }));
  }
}

/** What a node that names deps `D` receives: one dep's output as is, or a record of several. */
export type Inputs<Outs, D> = D extends keyof Outs ? Outs[D]
  : D extends ReadonlyArray<keyof Outs> ? { readonly [K in D[number]]: Outs[K] }
  : never;

/**
 * A fan-in graph: each node names the earlier node it reads (`"encode"`, receiving that output as is) or several
 * (`["encode", "cluster"]`, receiving `{ encode, cluster }`). `Outs` maps every name defined so far, starting with
 * `input` (the run's input), to its output type; the plan's output is the last node's.
 */
export class Dag<in I, Outs extends { readonly input: unknown }, out O, out E = never, out R = never>
  extends Plan<I, O, E, R> {
  declare readonly "~outs": Outs;

  static make<I = void>(): Dag<I, { readonly input: I }, I> {
    return new Dag([]);
  }

  node<const D extends (keyof Outs & string) | ReadonlyArray<keyof Outs & string>, O2, E2, R2, const N extends string>(
    deps: D,
    s: Stage<Inputs<Outs, D>, O2, E2, R2, Fresh<N, keyof Outs>>,
  ): Dag<I, Outs & { readonly [K in N]: O2 }, O2, E | E2, R | R2> {
    const list: ReadonlyArray<string> = typeof deps === "string" ? [deps] : deps;
    if (new Set(list).size !== list.length) {
      throw new GraphDefinitionError({ message: `stage '${s.name}' lists a dependency twice: ${list.join(", ")}` });
    }
    const receives = typeof deps === "string" ? "value" : "record";
    return new Dag(Plan.append(this.nodes, { stage: s as AnyStage, deps: list, receives }));
  }
}
