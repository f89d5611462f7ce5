export * from './spec.ts';
export * from './request.ts';
export { splitCommand } from './split.ts';
