/**
 * Node-specific set-up: scopes follow the async call chain through AsyncLocalStorage.
 * Imported by the package root when running under Node.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { installAsyncContext, type Scope } from './scope.js';

installAsyncContext(new AsyncLocalStorage<Scope>());
