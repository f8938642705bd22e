// The API key lives in sessionStorage only: gone when the tab closes, never in a URL, never
// in localStorage, never in a cookie the browser would send by itself.

const KEY = "plantwire.api-key";

export type Role = "viewer" | "operator" | "admin";
const ORDER: Role[] = ["viewer", "operator", "admin"];

/** Whether a key of role `role` may do what needs `needed`. */
export function allows(role: Role, needed: Role): boolean {
  return ORDER.indexOf(role) >= ORDER.indexOf(needed);
}

export function isRole(value: unknown): value is Role {
  return typeof value === "string" && (ORDER as string[]).includes(value);
}

export function storedKey(storage: Storage = sessionStorage): string | null {
  return storage.getItem(KEY);
}

export function storeKey(key: string, storage: Storage = sessionStorage): void {
  storage.setItem(KEY, key);
}

export function forgetKey(storage: Storage = sessionStorage): void {
  storage.removeItem(KEY);
}
